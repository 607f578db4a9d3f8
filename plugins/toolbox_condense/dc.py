"""One outer iteration of DC (gradient matching) and DSA (the same with Siamese augmentation).

Per iteration: a fresh network; outer_loop times: match the per-class gradients of real and
synthetic images and take one step on the images, then (except after the last) train the network
for inner_loop epochs on the detached synthetic set (SGD lr_net, batch 256, no momentum).

On several ranks (toolbox.distributed) each rank matches only its classes (``Matcher.owned``): once
every rank has built the same network from the shared generator, one class's term depends on that
class's images alone. Every rank still draws the real batches and augmentations of all classes, so
the generators stay in step with a single process; the ranks then sum the images' gradient (each
class's part is nonzero on its owner only, so the sum is that part exactly) and every rank takes the
same step on the whole set, holding the same images and momentum as one process would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from toolbox import distributed
from toolbox.seeding import init_with_seed

from . import augment
from .matching import class_match_loss, match_loss_vmap

# (outer_loop, inner_loop) by images per class, from the reference
LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
BN_IMAGES_PER_CLASS = 16


@dataclass
class Matcher:
    """Everything an iteration needs besides the synthetic images and their optimiser."""

    build: object            # () -> fresh network (default init from the global RNG)
    train_x: torch.Tensor    # normalised real images on the device (or sampling.StreamedRows)
    classes: object          # sampling.ClassIndex
    batch_real: int
    outer_loop: int
    inner_loop: int
    lr_net: float
    batch_train: int
    distance: str
    families: tuple | None   # DSA families, None for DC
    batched: bool            # all classes in one vmapped call, else class by class
    gen_net: torch.Generator
    gen_sample: torch.Generator
    gen_augment: torch.Generator
    # the classes this rank matches (distributed.share); all of them in one process
    owned: slice = field(default_factory=lambda: slice(None))


def classes_batched(choice: str, device) -> bool:
    """The recipe's class_batching: vmap (all classes in one batched call) or loop; auto = vmap on
    CUDA, where it saves thousands of small kernel launches, and loop elsewhere (faster on the CPU)."""
    return choice == "vmap" or (choice == "auto" and torch.device(device).type == "cuda")


def fresh_network(build, generator: torch.Generator):
    """A new network whose default initialisation is drawn from ``generator`` (reproducible)."""
    return init_with_seed(build, int(torch.randint(0, 2**62, (1,), generator=generator)))


def _freeze_batchnorm(net, m: Matcher) -> None:
    """Small synthetic batches give useless batch statistics: estimate them on 16 real images per
    class, then keep them fixed for the matching (the reference procedure)."""
    idx, mask = m.classes.sample(BN_IMAGES_PER_CLASS, m.gen_sample)
    # a boolean mask costs a host read of its size; with every class big enough there is none to apply
    rows = idx.flatten() if BN_IMAGES_PER_CLASS <= m.classes.smallest else idx[mask]
    net.train()
    with torch.no_grad():
        net(m.train_x[rows])
    for module in net.modules():
        if isinstance(module, _BatchNorm):
            module.eval()


def _train_network(net, opt, syn, syn_y, m: Matcher) -> None:
    images, labels = syn.detach(), syn_y
    net.train()
    for _ in range(m.inner_loop):
        perm = torch.randperm(images.shape[0], generator=m.gen_sample, device=m.gen_sample.device).to(images.device)
        for start in range(0, images.shape[0], m.batch_train):
            idx = perm[start:start + m.batch_train]
            x = images[idx]
            if m.families is not None:
                draws = augment.draw(x.shape[0], m.families, x.shape[-1], m.gen_augment, one_family=True)
                x = augment.apply(x, draws, m.families)
            loss = F.cross_entropy(net(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def match_step(syn: torch.Tensor, opt_img, m: Matcher) -> float:
    """One DC/DSA iteration on ``syn`` [C, ipc, ...] (a leaf); returns the mean matching loss."""
    num_classes, ipc = syn.shape[:2]
    syn_y = torch.arange(num_classes, device=syn.device)[:, None].expand(num_classes, ipc)
    net = fresh_network(m.build, m.gen_net).to(syn.device)
    opt_net = torch.optim.SGD(net.parameters(), lr=m.lr_net)
    has_bn = any(isinstance(x, _BatchNorm) for x in net.modules())
    full = m.batch_real <= m.classes.smallest  # no class short of images: no mask to apply
    total = torch.zeros((), dtype=torch.float64, device=syn.device)  # read once, at the end
    mine = slice(*m.owned.indices(num_classes)[:2])
    for ol in range(m.outer_loop):
        if has_bn:
            _freeze_batchnorm(net, m)
        idx, mask = m.classes.sample(m.batch_real, m.gen_sample)
        real_x = m.train_x[idx]
        real_y = torch.arange(num_classes, device=syn.device)[:, None].expand_as(idx)
        syn_x = syn
        draws = None
        if m.families is not None:
            # one transformation per class, shared by its real and its synthetic images
            draws = augment.draw(num_classes, m.families, syn.shape[-1], m.gen_augment)
        opt_img.zero_grad(set_to_none=True)
        if m.batched:
            real_x, syn_x = real_x[mine], syn[mine]
            if draws is not None:
                own = draws.select(mine)
                real_x = augment.apply(real_x.flatten(0, 1), own.repeat(idx.shape[1]), m.families).view_as(real_x)
                syn_x = augment.apply(syn_x.flatten(0, 1), own.repeat(ipc), m.families).view_as(syn_x)
            loss = match_loss_vmap(net, real_x, real_y[mine], mask[mine].to(syn.dtype), syn_x, syn_y[mine], m.distance)
            loss.backward(inputs=[syn])
            total += loss.detach()
        else:
            for c in range(mine.start, mine.stop):
                real_c, syn_c = (real_x[c] if full else real_x[c][mask[c]]), syn[c]
                if draws is not None:
                    one = draws.select(slice(c, c + 1))
                    real_c = augment.apply(real_c, one.repeat(real_c.shape[0]), m.families)
                    syn_c = augment.apply(syn_c, one.repeat(ipc), m.families)
                term = class_match_loss(net, real_c, real_y[c][: real_c.shape[0]], syn_c, syn_y[c], m.distance)
                term.backward(inputs=[syn])  # one class's graph at a time: the memory-light form
                total += term.detach()
        distributed.all_sum(syn.grad)
        opt_img.step()
        if ol == m.outer_loop - 1:
            break
        _train_network(net, opt_net, syn.flatten(0, 1), syn_y.reshape(-1), m)
    # float64 sums float32 terms exactly as Python floats did, so the logged loss is unchanged; on
    # several ranks the same holds for the sum of their partial sums
    return float(distributed.all_sum(total)) / (num_classes * m.outer_loop)
