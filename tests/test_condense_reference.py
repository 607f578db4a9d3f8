"""Step equivalence of DC, DSA and DM with a transcription of the reference loops.

Reference: VICO-UoE/DatasetCondensation, main.py (the DC/DSA outer loop), main_DM.py (DM) and
utils.py (match_loss/distance_wb, epoch, DiffAugment with ParamDiffAug, get_loops). The
transcription below follows the reference's own order of operations: a Python loop over classes,
one real and one synthetic batch per class, the class's gradients and its match_loss term summed
into one loss, one step of optimizer_img, then (except after the last outer step) inner_loop epochs
of network training on a copy of the synthetic set through a DataLoader.

Both sides start from the same synthetic images and the same network weights, and use the same
random draws, which ours makes and records (what the reference draws from numpy and the clock):

- real images: the reference's ``get_images(c, n)`` (``np.random.permutation(indices_class[c])[:n]``)
  returns, in order, the images of row c of our ClassIndex.sample calls (same indices, same order);
- inner-loop shuffling: the DataLoader's ``shuffle=True`` permutation is replaced by a sampler that
  yields the permutation ours drew for that epoch;
- DSA: the reference draws one seed per class from the clock and calls DiffAugment on the real and
  on the synthetic batch with it; every function reseeds the global RNG from ``param.latestseed``
  (incremented per draw) and, being Siamese, copies row 0 of each draw over the batch, so real and
  synthetic images of a class get one and the same transformation. The transcription takes, in place
  of the seeded draws, row c of the parameters ours drew for that outer step (family, brightness,
  saturation, contrast, crop shifts, cutout centre, flip decision, scale sx/sy, angle), copies it over
  the batch as the reference does and applies it with the reference's own formulas. Inner-loop and
  evaluation augmentation (seed -1: one family per batch, parameters per image) takes our draw for
  that batch the same way.

Networks are the ConvNet of toolbox.models (width 16, 3x8x8 input, depth 3 so maps 8-4-2-1: the same
shapes whatever the one-channel padding rule), built by ours and loaded into the transcription's copy.

Precision. One DC/DSA iteration with inner training is chaotic: a difference at rounding level grows
about 100x per outer step once the network has been trained for 50 inner epochs (float64, batched
form against the transcription, outer steps 2/3/4/5: 2e-14, 2e-12, 2e-10, 3e-8; float32: a 1e-6
change of the initial images moves the result by 0.15 after three outer steps). So a form that adds
the same numbers in another order (the vmapped classes) or differs at rounding level for another
reason (DSA in float32: ~1e-6 after three image steps without inner training) is compared in float64
over three outer steps with the table's inner_loop of 50 (agreement 0 to 8e-10, tolerance 1e-8); the
class-by-class DC form, which does the reference's very operations, is compared in float32 over the
whole (10, 50) schedule (it agrees bit for bit). The transcription computes in the dtype of its
inputs (the reference's `.float()` casts are where its data is float32 anyway).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from toolbox_condense import augment
from toolbox_condense.condensation import loops_for
from toolbox_condense.dc import LOOPS, Matcher, match_step
from toolbox_condense.dm import Embedder, dm_step
from toolbox_condense.evaluator import Protocol, accuracies_on, model_seed, train_models
from toolbox_condense.sampling import ClassIndex

from toolbox.errors import UsageError
from toolbox.models.convnet import ConvNet

CLASSES, SHAPE, WIDTH = 3, (3, 8, 8), 16
COUNTS = (150, 300, 280)  # class 0 holds fewer than batch_real: the reference then takes all of it
STRATEGY = "color_crop_cutout_flip_scale_rotate"  # the reference's default DSA strategy
BATCH_REAL, BATCH_TRAIN, LR_NET, MOMENTUM_IMG = 256, 256, 0.01, 0.5  # main.py / main_DM.py defaults
# largest allowed |ours - reference| of the updated images (and of the network weights), by dtype;
# the images move by 0.08-3 in these steps (at least 1000x the tolerance, asserted)
ATOL = {torch.float32: 1e-5, torch.float64: 1e-8}
ATOL_DM = 1e-6  # float32, no inner training


def _reference_get_loops(ipc):
    """utils.get_loops: (outer_loop, inner_loop) by ipc; exits for any other ipc."""
    table = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
    return table[ipc]


@pytest.fixture(scope="module")
def real():
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
    y = y[torch.randperm(len(y), generator=g)]
    x = torch.randn(len(y), *SHAPE, generator=g) + 0.5 * y.view(-1, 1, 1, 1)  # classes differ
    return x, y


# --- recording what ours draws ------------------------------------------------------------------


class Recorder:
    """Ours's draws of one step, in the order made."""

    def __init__(self):
        self.samples = []    # (n, idx, mask) per ClassIndex.sample call
        self.perms = []      # one per torch.randperm call (an epoch's shuffle)
        self.siamese = []    # augment.draw per matching step: row c is class c's shared transform
        self.per_image = []  # augment.draw(..., one_family=True) per training batch
        self.nets = []       # (network, its initial state_dict) per network built


class RecordingIndex:
    def __init__(self, inner, rec):
        self.inner, self.rec = inner, rec

    def sample(self, n, generator):
        idx, mask = self.inner.sample(n, generator)
        self.rec.samples.append((n, idx.clone(), mask.clone()))
        return idx, mask

    def __getattr__(self, name):  # counts, smallest, ...: the wrapped index's
        return getattr(self.inner, name)


def _convnet(norm, dtype):
    return ConvNet(num_classes=CLASSES, in_channels=SHAPE[0], image_size=SHAPE[1], width=WIDTH, norm=norm).to(dtype)


def _builder(rec, norm="instancenorm", dtype=torch.float32):
    def build():
        net = _convnet(norm, dtype)
        rec.nets.append((net, copy.deepcopy(net.state_dict())))
        return net
    return build


@contextmanager
def recording(monkeypatch, rec):
    randperm, draw = torch.randperm, augment.draw

    def recorded_randperm(*args, **kwargs):
        out = randperm(*args, **kwargs)
        rec.perms.append(out.clone())
        return out

    def recorded_draw(count, families, size, generator, one_family=False):
        out = draw(count, families, size, generator, one_family=one_family)
        (rec.per_image if one_family else rec.siamese).append(out)
        return out

    with monkeypatch.context() as mp:
        mp.setattr(torch, "randperm", recorded_randperm)
        mp.setattr(augment, "draw", recorded_draw)
        yield


def _reference_net(rec, norm="instancenorm", dtype=torch.float32):
    net = _convnet(norm, dtype)
    net.load_state_dict(rec.nets[0][1])
    return net


# --- transcription: the reference's sampling, shuffling and augmentation with our draws ------


class ReplayedImages:
    """main.py's get_images(c, n). The reference calls it for c = 0..C-1 in turn (for the BN
    statistics with n = 16, then per class in the matching loop); each such round is one of our
    ClassIndex.sample calls, row c of it."""

    def __init__(self, images_all, samples):
        self.images_all, self.samples = images_all, list(samples)

    def __call__(self, c, n):
        if c == 0:
            self.current = self.samples.pop(0)
        drawn_n, idx, mask = self.current
        assert drawn_n == n, "ours and the reference draw different batch sizes"
        return self.images_all[idx[c][mask[c]]]


class ReplayedShuffle(torch.utils.data.Sampler):
    """The permutation DataLoader(shuffle=True) draws each epoch, replaced by our for that epoch."""

    def __init__(self, n, perms):
        self.n, self.perms = n, perms

    def __len__(self):
        return self.n

    def __iter__(self):
        perm = self.perms.pop(0)
        assert perm.numel() == self.n
        return iter(perm.tolist())


def _rows(values, n):
    """A draw of n values, as the reference makes one (torch.rand(n) etc.); a one-row (Siamese)
    draw is given for row 0 and filled in by the caller's `randx[:] = randx[0]`."""
    return values.clone() if values.shape[0] == n else values[:1].repeat(n)


def ref_brightness(x, v, siamese):
    randb = _rows(v.brightness, x.size(0)).view(-1, 1, 1, 1).to(x.dtype)
    if siamese:
        randb[:] = randb[0]
    return x + (randb - 0.5) * 1.0  # ParamDiffAug.brightness


def ref_saturation(x, v, siamese):
    x_mean = x.mean(dim=1, keepdim=True)
    rands = _rows(v.saturation, x.size(0)).view(-1, 1, 1, 1).to(x.dtype)
    if siamese:
        rands[:] = rands[0]
    return (x - x_mean) * (rands * 2.0) + x_mean  # ParamDiffAug.saturation


def ref_contrast(x, v, siamese):
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    randc = _rows(v.contrast, x.size(0)).view(-1, 1, 1, 1).to(x.dtype)
    if siamese:
        randc[:] = randc[0]
    return (x - x_mean) * (randc + 0.5) + x_mean  # ParamDiffAug.contrast


def ref_crop(x, v, siamese):
    # pad by one zero pixel, then index the shifted grid clamped into the padded image
    translation_x = _rows(v.shift_x, x.size(0)).view(-1, 1, 1)
    translation_y = _rows(v.shift_y, x.size(0)).view(-1, 1, 1)
    if siamese:
        translation_x[:] = translation_x[0]
        translation_y[:] = translation_y[0]
    grid_batch, grid_x, grid_y = torch.meshgrid(torch.arange(x.size(0)), torch.arange(x.size(2)),
                                                torch.arange(x.size(3)), indexing="ij")
    grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)


def ref_cutout(x, v, siamese):
    size = int(x.size(2) * 0.5 + 0.5), int(x.size(3) * 0.5 + 0.5)  # ParamDiffAug.ratio_cutout
    offset_x = _rows(v.cut_x, x.size(0)).view(-1, 1, 1)
    offset_y = _rows(v.cut_y, x.size(0)).view(-1, 1, 1)
    if siamese:
        offset_x[:] = offset_x[0]
        offset_y[:] = offset_y[0]
    grid_batch, grid_x, grid_y = torch.meshgrid(torch.arange(x.size(0)), torch.arange(size[0]),
                                                torch.arange(size[1]), indexing="ij")
    grid_x = torch.clamp(grid_x + offset_x - size[0] // 2, min=0, max=x.size(2) - 1)
    grid_y = torch.clamp(grid_y + offset_y - size[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype)
    mask[grid_batch, grid_x, grid_y] = 0
    return x * mask.unsqueeze(1)


def ref_flip(x, v, siamese):
    # the reference draws randf and flips where randf < 0.5; ours keeps that decision
    flip = _rows(v.flip, x.size(0)).view(-1, 1, 1, 1)
    if siamese:
        flip[:] = flip[0]
    return torch.where(flip, x.flip(3), x)


def ref_scale(x, v, siamese):
    sx, sy = _rows(v.sx, x.size(0)), _rows(v.sy, x.size(0))
    theta = torch.tensor([[[sx[i], 0, 0], [0, sy[i], 0]] for i in range(x.shape[0])], dtype=x.dtype)
    if siamese:
        theta[:] = theta[0]
    grid = F.affine_grid(theta, x.shape, align_corners=False)  # the default the reference gets
    return F.grid_sample(x, grid, align_corners=False)


def ref_rotate(x, v, siamese):
    angle = _rows(v.angle, x.size(0))
    theta = torch.tensor([[[torch.cos(angle[i]), torch.sin(-angle[i]), 0], [torch.sin(angle[i]), torch.cos(angle[i]), 0]]
                          for i in range(x.shape[0])], dtype=x.dtype)
    if siamese:
        theta[:] = theta[0]
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


REF_FNS = {"color": [ref_brightness, ref_saturation, ref_contrast], "crop": [ref_crop], "cutout": [ref_cutout],
           "flip": [ref_flip], "scale": [ref_scale], "rotate": [ref_rotate]}


def ref_diff_augment(x, strategy, v, siamese):
    """utils.DiffAugment, aug_mode 'S': one family for the call, then its functions in order."""
    if strategy in ("None", "none", ""):
        return x
    family = augment.FAMILIES[int(v.family[0])]
    assert family in strategy.split("_") and (v.family == v.family[0]).all()
    for f in REF_FNS[family]:
        x = f(x, v, siamese)
    return x.contiguous()


# --- transcription: match_loss, epoch, the DC/DSA outer loop, DM, evaluate_synset ----------------


def ref_distance_wb(gwr, gws):
    shape = gwr.shape
    if len(shape) == 4:  # conv: out x (in*h*w)
        gwr, gws = gwr.reshape(shape[0], -1), gws.reshape(shape[0], -1)
    elif len(shape) == 3:  # layernorm: C x (h*w)
        gwr, gws = gwr.reshape(shape[0], -1), gws.reshape(shape[0], -1)
    elif len(shape) == 1:  # bias, norm affine: no contribution
        return torch.tensor(0, dtype=gwr.dtype)
    return torch.sum(1 - torch.sum(gwr * gws, dim=-1) / (torch.norm(gwr, dim=-1) * torch.norm(gws, dim=-1) + 0.000001))


def ref_match_loss(gw_syn, gw_real):
    dis = torch.tensor(0.0, dtype=gw_real[0].dtype)
    for gwr, gws in zip(gw_real, gw_syn):
        dis += ref_distance_wb(gwr, gws)
    return dis


def ref_epoch(mode, dataloader, net, optimizer, criterion, strategy, per_image):
    """utils.epoch; aug means DiffAugment with seed -1 (one family per batch, per-image parameters)."""
    loss_avg, acc_avg, num_exp = 0.0, 0, 0
    net.train() if mode == "train" else net.eval()
    for img, lab in dataloader:
        if strategy is not None:
            img = ref_diff_augment(img, strategy, per_image.pop(0), siamese=False)
        output = net(img)
        loss = criterion(output, lab)
        loss_avg += loss.item() * lab.shape[0]
        acc_avg += int((output.argmax(-1) == lab).sum())
        num_exp += lab.shape[0]
        if mode == "train":
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return loss_avg / num_exp, acc_avg / num_exp


def reference_dc_iteration(net, image_syn, optimizer_img, get_images, args, rec):
    """One `it` of main.py after the network is built: outer_loop image steps with inner training."""
    num_classes, ipc, (channel, h, w) = CLASSES, args.ipc, SHAPE
    label_syn = torch.arange(num_classes).repeat_interleave(ipc)
    criterion = torch.nn.CrossEntropyLoss()
    siamese, per_image, perms = list(rec.siamese), list(rec.per_image), list(rec.perms)
    net.train()
    net_parameters = list(net.parameters())
    optimizer_net = torch.optim.SGD(net.parameters(), lr=args.lr_net)
    optimizer_net.zero_grad()
    loss_avg = 0.0
    for ol in range(args.outer_loop):
        if any("BatchNorm" in m._get_name() for m in net.modules()):
            img_real = torch.cat([get_images(c, 16) for c in range(num_classes)], dim=0)
            net.train()
            net(img_real)  # running mean/var from real images, then frozen
            for module in net.modules():
                if "BatchNorm" in module._get_name():
                    module.eval()
        loss = torch.tensor(0.0, dtype=image_syn.dtype)
        shared = siamese.pop(0) if args.dsa else None  # the clock seeds of this outer step
        for c in range(num_classes):
            img_real = get_images(c, args.batch_real)
            lab_real = torch.ones((img_real.shape[0],), dtype=torch.long) * c
            img_syn = image_syn[c * ipc:(c + 1) * ipc].reshape((ipc, channel, h, w))
            lab_syn = torch.ones((ipc,), dtype=torch.long) * c
            if args.dsa:
                seed = shared.select(slice(c, c + 1))
                img_real = ref_diff_augment(img_real, args.dsa_strategy, seed, siamese=True)
                img_syn = ref_diff_augment(img_syn, args.dsa_strategy, seed, siamese=True)
            output_real = net(img_real)
            loss_real = criterion(output_real, lab_real)
            gw_real = torch.autograd.grad(loss_real, net_parameters)
            gw_real = [g.detach().clone() for g in gw_real]
            output_syn = net(img_syn)
            loss_syn = criterion(output_syn, lab_syn)
            gw_syn = torch.autograd.grad(loss_syn, net_parameters, create_graph=True)
            loss += ref_match_loss(gw_syn, gw_real)
        optimizer_img.zero_grad()
        loss.backward()
        optimizer_img.step()
        loss_avg += loss.item()
        if ol == args.outer_loop - 1:
            break
        image_syn_train, label_syn_train = copy.deepcopy(image_syn.detach()), copy.deepcopy(label_syn.detach())
        dst = torch.utils.data.TensorDataset(image_syn_train, label_syn_train)
        trainloader = torch.utils.data.DataLoader(dst, batch_size=args.batch_train,
                                                  sampler=ReplayedShuffle(len(dst), perms), num_workers=0)
        for _ in range(args.inner_loop):
            ref_epoch("train", trainloader, net, optimizer_net, criterion,
                      args.dsa_strategy if args.dsa else None, per_image)
    assert not siamese and not per_image and not perms, "ours drew more than the reference used"
    return loss_avg / (num_classes * args.outer_loop)


def reference_dm_iteration(net, image_syn, optimizer_img, get_images, args, rec):
    """One `it` of main_DM.py after the network is built (both branches: ConvNet and ConvNetBN)."""
    num_classes, ipc, (channel, h, w) = CLASSES, args.ipc, SHAPE
    shared = rec.siamese[0] if args.dsa else None
    net.train()
    for param in net.parameters():
        param.requires_grad = False
    embed = net.embed
    loss = torch.tensor(0.0, dtype=image_syn.dtype)
    real_all, syn_all = [], []
    for c in range(num_classes):
        img_real = get_images(c, args.batch_real)
        img_syn = image_syn[c * ipc:(c + 1) * ipc].reshape((ipc, channel, h, w))
        if args.dsa:
            seed = shared.select(slice(c, c + 1))
            img_real = ref_diff_augment(img_real, args.dsa_strategy, seed, siamese=True)
            img_syn = ref_diff_augment(img_syn, args.dsa_strategy, seed, siamese=True)
        if not args.bn:
            output_real = embed(img_real).detach()
            output_syn = embed(img_syn)
            loss += torch.sum((torch.mean(output_real, dim=0) - torch.mean(output_syn, dim=0)) ** 2)
        else:
            real_all.append(img_real)
            syn_all.append(img_syn)
    if args.bn:  # all classes through the network at once (batch statistics over every class)
        output_real = embed(torch.cat(real_all, dim=0)).detach()
        output_syn = embed(torch.cat(syn_all, dim=0))
        loss += torch.sum((torch.mean(output_real.reshape(num_classes, args.batch_real, -1), dim=1)
                           - torch.mean(output_syn.reshape(num_classes, ipc, -1), dim=1)) ** 2)
    optimizer_img.zero_grad()
    loss.backward()
    optimizer_img.step()
    return loss.item() / num_classes


def reference_evaluate_synset(net, images_train, labels_train, test_x, test_y, args, rec, lr_schedule=None):
    """utils.evaluate_synset: Epoch+1 epochs, lr x0.1 (new optimiser) after epoch Epoch//2+1, test
    accuracy after the last epoch."""
    lr = float(args.lr_net)
    Epoch = int(args.epoch_eval_train)
    lr_schedule = [Epoch // 2 + 1] if lr_schedule is None else lr_schedule
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    criterion = torch.nn.CrossEntropyLoss()
    perms, per_image = list(rec.perms), list(rec.per_image)
    dst_train = torch.utils.data.TensorDataset(images_train, labels_train)
    trainloader = torch.utils.data.DataLoader(dst_train, batch_size=args.batch_train,
                                              sampler=ReplayedShuffle(len(dst_train), perms), num_workers=0)
    for ep in range(Epoch + 1):
        ref_epoch("train", trainloader, net, optimizer, criterion, args.dsa_strategy if args.dsa else None, per_image)
        if ep in lr_schedule:
            lr *= 0.1
            optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    assert not perms and not per_image
    testloader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(test_x, test_y), batch_size=256,
                                             shuffle=False, num_workers=0)
    _, acc_test = ref_epoch("test", testloader, net, optimizer, criterion, None, [])
    return net, acc_test


# --- the tests ----------------------------------------------------------------------------------


def _max_diff(a, b):
    return float((a - b).detach().abs().max())


def test_loop_table_is_the_references_get_loops():
    for ipc in (1, 10, 20, 30, 40, 50):
        recipe = SimpleNamespace(outer_loop=None, inner_loop=None, ipc=ipc, method="dc")
        assert loops_for(recipe) == _reference_get_loops(ipc)
    assert set(LOOPS) == {1, 10, 20, 30, 40, 50}
    with pytest.raises(UsageError, match="outer_loop"):
        loops_for(SimpleNamespace(outer_loop=None, inner_loop=None, ipc=2, method="dc"))


def _run_matching(monkeypatch, real, *, ipc, dsa, batched, norm="instancenorm", syn0, loops=None, dtype=torch.float32):
    """our match_step and the transcription from the same start; loops: (outer, inner), or
    None for the reference's table by ipc on both sides."""
    x, y = real
    x, syn0 = x.to(dtype), syn0.to(dtype)
    outer, inner = loops or (None, None)
    outer, inner = loops_for(SimpleNamespace(outer_loop=outer, inner_loop=inner, ipc=ipc, method="dsa" if dsa else "dc"))
    rec = Recorder()
    gens = [torch.Generator().manual_seed(s) for s in (11, 12, 13)]
    m = Matcher(_builder(rec, norm, dtype), x, RecordingIndex(ClassIndex(y, CLASSES), rec), BATCH_REAL, outer, inner,
                LR_NET, BATCH_TRAIN, "ours", augment.parse_strategy(STRATEGY) if dsa else None, batched, *gens)
    syn = syn0.clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=0.1, momentum=MOMENTUM_IMG)  # DC/DSA lr_img 0.1
    with recording(monkeypatch, rec):
        loss = match_step(syn, opt, m)
    assert len(rec.nets) == 1

    args = SimpleNamespace(ipc=ipc, lr_net=LR_NET, batch_real=BATCH_REAL, batch_train=BATCH_TRAIN, dsa=dsa,
                           dsa_strategy=STRATEGY, **dict(zip(("outer_loop", "inner_loop"), loops or _reference_get_loops(ipc))))
    net = _reference_net(rec, norm, dtype)
    image_syn = syn0.clone().flatten(0, 1).requires_grad_(True)  # [C*ipc, ...], class-major like label_syn
    optimizer_img = torch.optim.SGD([image_syn], lr=0.1, momentum=0.5)
    ref_loss = reference_dc_iteration(net, image_syn, optimizer_img, ReplayedImages(x, rec.samples), args, rec)
    return syn.detach(), image_syn.detach().view_as(syn), loss, ref_loss, rec.nets[0][0], net, syn0


def _check(ours, ref, loss, ref_loss, net_ours, net_ref, syn0):
    atol = ATOL[ours.dtype]
    moved = _max_diff(ref, syn0)
    assert moved > 1e3 * atol  # the step did move the images: the comparison is not vacuous
    diff = _max_diff(ours, ref)
    assert torch.allclose(ours, ref, rtol=0, atol=atol), f"max abs diff {diff:.2e} (moved {moved:.2e})"
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for (k, a), b in zip(net_ours.state_dict().items(), net_ref.state_dict().values()):
        assert torch.allclose(a, b, rtol=0, atol=atol), k  # the inner-loop training left the same network
    return diff


def _noise(ipc, seed):
    return torch.randn(CLASSES, ipc, *SHAPE, generator=torch.Generator().manual_seed(seed))  # init noise (DC)


def _real_init(real, ipc, seed):
    x, y = real
    g = torch.Generator().manual_seed(seed)
    return torch.stack([x[(y == c).nonzero().squeeze(1)[torch.randperm(COUNTS[c], generator=g)[:ipc]]]
                        for c in range(CLASSES)])  # init real, the DSA/DM default


@pytest.mark.parametrize("batched", [False, True], ids=["loop", "vmap"])
def test_dc_ipc1_equals_the_reference_iteration(monkeypatch, real, batched):
    _check(*_run_matching(monkeypatch, real, ipc=1, dsa=False, batched=batched, syn0=_noise(1, 5)))


def test_dc_ipc10_class_loop_equals_the_reference_over_the_whole_table_schedule(monkeypatch, real):
    # outer_loop 10, inner_loop 50: ten image steps with momentum, 9 x 50 network epochs between them.
    # The class-by-class form does the reference's very operations, so it agrees to the last bit.
    _check(*_run_matching(monkeypatch, real, ipc=10, dsa=False, batched=False, syn0=_noise(10, 6)))


@pytest.mark.parametrize("batched, dtype", [(False, torch.float32), (True, torch.float64)], ids=["loop", "vmap"])
def test_dc_batchnorm_network_freezes_real_statistics_like_the_reference(monkeypatch, real, batched, dtype):
    # BN: 16 real images per class set the running statistics before every outer step, then frozen;
    # three outer steps (two inner trainings of 50 epochs in train mode between them) keep it short
    _check(*_run_matching(monkeypatch, real, ipc=10, dsa=False, batched=batched, norm="batchnorm", syn0=_noise(10, 7),
                          loops=(3, _reference_get_loops(10)[1]), dtype=dtype))


def test_dc_ipc10_vmap_with_inner_training_equals_the_reference(monkeypatch, real):
    # the batched form sums in another order: float64 and three outer steps (two inner trainings of
    # the table's 50 epochs), see the module docstring
    _check(*_run_matching(monkeypatch, real, ipc=10, dsa=False, batched=True, syn0=_noise(10, 6),
                          loops=(3, _reference_get_loops(10)[1]), dtype=torch.float64))


@pytest.mark.parametrize("batched", [False, True], ids=["loop", "vmap"])
def test_dsa_ipc1_equals_the_reference_iteration(monkeypatch, real, batched):
    _check(*_run_matching(monkeypatch, real, ipc=1, dsa=True, batched=batched, syn0=_real_init(real, 1, 8)))


@pytest.mark.parametrize("batched", [False, True], ids=["loop", "vmap"])
def test_dsa_ipc10_with_augmented_inner_training_equals_the_reference(monkeypatch, real, batched):
    _check(*_run_matching(monkeypatch, real, ipc=10, dsa=True, batched=batched, syn0=_real_init(real, 10, 9),
                          loops=(3, _reference_get_loops(10)[1]), dtype=torch.float64))


def test_default_dsa_strategy_drops_flip_for_the_digit_datasets_only_like_the_reference():
    # readme: color_crop_cutout_flip_scale_rotate for FashionMNIST and CIFAR10/100,
    # color_crop_cutout_scale_rotate for the digit datasets (MNIST and SVHN)
    for name in ("fashion-mnist", "cifar10", "cifar100"):
        assert augment.default_strategy(name) == STRATEGY, name
    for name in ("mnist", "svhn", "digits"):
        assert augment.default_strategy(name) == "color_crop_cutout_scale_rotate", name


@pytest.mark.parametrize("siamese", [True, False], ids=["siamese", "per-image"])
def test_every_dsa_family_equals_the_reference_transform(siamese):
    """Each family alone, forward and gradient: our apply against the transcribed functions."""
    x0 = torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(10))
    g = torch.Generator().manual_seed(11)
    for k, name in enumerate(augment.FAMILIES):
        for _ in range(4):
            v = augment.draw(1 if siamese else 6, (k,), SHAPE[1], g, one_family=True)
            x_ours, x_ref = x0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
            out = augment.apply(x_ours, v.repeat(6) if siamese else v)
            ref = ref_diff_augment(x_ref, name, v, siamese)
            assert torch.allclose(out, ref, rtol=0, atol=1e-6), name
            w = torch.randn(out.shape, generator=g)
            (out * w).sum().backward()
            (ref * w).sum().backward()
            assert torch.allclose(x_ours.grad, x_ref.grad, rtol=0, atol=1e-6), name


def _run_dm(monkeypatch, real, *, ipc, norm, batch_real, dsa=True):
    x, y = real
    rec = Recorder()
    gens = [torch.Generator().manual_seed(s) for s in (21, 22, 23)]
    m = Embedder(_builder(rec, norm), x, RecordingIndex(ClassIndex(y, CLASSES), rec), batch_real,
                 augment.parse_strategy(STRATEGY) if dsa else None, *gens)
    syn0 = _real_init(real, ipc, 24)
    syn = syn0.clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=1.0, momentum=MOMENTUM_IMG)  # DM lr_img 1.0
    with recording(monkeypatch, rec):
        loss = dm_step(syn, opt, m)
    args = SimpleNamespace(ipc=ipc, batch_real=batch_real, dsa=dsa, dsa_strategy=STRATEGY, bn=norm == "batchnorm")
    net = _reference_net(rec, norm)
    image_syn = syn0.clone().flatten(0, 1).requires_grad_(True)
    optimizer_img = torch.optim.SGD([image_syn], lr=1.0, momentum=0.5)
    ref_loss = reference_dm_iteration(net, image_syn, optimizer_img, ReplayedImages(x, rec.samples), args, rec)
    ours, ref = syn.detach(), image_syn.detach().view_as(syn)
    moved = _max_diff(ref, syn0)
    # one DM step moves the images by 0.003-0.06 here, so a tolerance below DC's
    assert moved > 1000 * ATOL_DM
    assert torch.allclose(ours, ref, rtol=0, atol=ATOL_DM), f"max abs diff {_max_diff(ours, ref):.2e}"
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    return _max_diff(ours, ref)


@pytest.mark.parametrize("dsa", [True, False], ids=["dsa", "no-aug"])
def test_dm_equals_the_reference_iteration(monkeypatch, real, dsa):
    _run_dm(monkeypatch, real, ipc=2, norm="instancenorm", batch_real=BATCH_REAL, dsa=dsa)


def test_dm_batchnorm_equals_the_references_convnetbn_branch(monkeypatch, real):
    # the reference's BN branch reshapes to [classes, batch_real, ...]: every class must fill it
    _run_dm(monkeypatch, real, ipc=2, norm="batchnorm", batch_real=128)


@pytest.mark.parametrize("stacked", [False, True], ids=["one-by-one", "stacked"])
@pytest.mark.parametrize("strategy", ["none", STRATEGY], ids=["dc", "dsa"])
def test_evaluator_equals_the_reference_evaluate_synset(monkeypatch, stacked, strategy):
    g = torch.Generator().manual_seed(30)
    means = 2 * torch.randn(CLASSES, *SHAPE, generator=g)  # learnable in 5 epochs: accuracy well above chance
    # 300 images: two batches of 256 + 44 per epoch, as the reference's DataLoader (no drop_last) makes
    labels, test_y = torch.randint(0, CLASSES, (300,), generator=g), torch.randint(0, CLASSES, (400,), generator=g)
    images = torch.randn(300, *SHAPE, generator=g) + means[labels]
    test_x = torch.randn(400, *SHAPE, generator=g) + means[test_y]
    epochs = 4  # 5 epochs; lr 0.01 for epochs 0..3, 0.001 with a fresh optimiser for epoch 4
    protocol = Protocol(models=1, epochs=epochs, augment=strategy)
    rec = Recorder()
    with recording(monkeypatch, rec):
        forward, params = train_models(_builder(rec), images, labels, protocol, [model_seed(0, 0)], "cpu", stacked=stacked)
    acc = float(accuracies_on(forward, test_x, test_y)[0])
    assert len(rec.perms) == epochs + 1

    args = SimpleNamespace(lr_net=0.01, epoch_eval_train=epochs, batch_train=256, dsa=strategy != "none",
                           dsa_strategy=strategy)
    net, ref_acc = reference_evaluate_synset(_reference_net(rec), images, labels, test_x, test_y, args, rec)
    worst = 0.0
    for k, p in net.named_parameters():
        worst = max(worst, _max_diff(params[k][0], p))
        assert torch.allclose(params[k][0], p.detach(), rtol=0, atol=1e-6), (k, worst)
    assert acc == ref_acc and acc > 1.3 / CLASSES
    # the schedule is what the comparison pins: decaying one epoch earlier (at Epoch//2) moves the weights
    early, _ = reference_evaluate_synset(_reference_net(rec), images, labels, test_x, test_y, args, rec, lr_schedule=[epochs // 2])
    assert max(_max_diff(params[k][0], p) for k, p in early.named_parameters()) > 100 * max(worst, 1e-7)


def test_augmented_batches_come_back_contiguous_like_diffaugment():
    # the reference ends DiffAugment with x.contiguous(); a crop-only batch used to come back
    # channels-last, which group norm under vmap (the stacked evaluator, one model) refused
    x = torch.randn(5, *SHAPE)
    for k in range(len(augment.FAMILIES)):
        out = augment.apply(x, augment.draw(5, (k,), SHAPE[1], torch.Generator().manual_seed(k), one_family=True))
        assert out.is_contiguous(), augment.FAMILIES[k]
    protocol = Protocol(models=1, epochs=1, augment="crop")
    train_models(_builder(Recorder()), x, torch.arange(5) % CLASSES, protocol, [model_seed(0, 0)], "cpu", stacked=True)
