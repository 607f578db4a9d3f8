"""The zoo's staged distillers (AB, FT, FSP) against transcriptions of RepDistiller, and the
pre-activation taps AB reads.

References (HobbitLong/RepDistiller; read, transcribed here in our own words, never imported):
- distiller_zoo/AB.py ``ABLoss`` (weights 2 ** (i - n + 1), per group the summed squared hinge / batch
  / 1000 * 3) and models/util.py ``Connector`` (identity where channels and height agree, else ConvReg
  without ReLU); train_student.py 'abound': ``init`` trains the connector and the student's features.
- distiller_zoo/FT.py ``FactorTransfer`` (p1 2, p2 1), models/util.py ``Paraphraser`` (k 0.5, no batch
  norm) and ``Translator`` (k 0.5, batch norm); helper/pretrain.py: the paraphraser learns MSE
  reconstruction of the teacher's feats[-2], at lr 0.01 for resnet / wrn students; loops.py: the
  teacher's factor is the (eval-mode) paraphraser's encoder, the student's the translator's.
- distiller_zoo/FSP.py ``FSP``: compute_fsp over consecutive maps of feats[:-1], (s - t)^2 mean per
  pair, summed in ``init``; it refuses feature lists whose channel counts differ.
- models/resnet.py, resnetv2.py, ShuffleNetv1.py, ShuffleNetv2.py: ``preact`` is each stage's last
  block before its final ReLU (ShuffleNetV2: the concatenation before the shuffle).

Compared in float64, so that a difference in the formula, not rounding, is what fails.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from toolbox_kd.features import FeatureTap, repdistiller_layers
from toolbox_kd.zoo import settings as zoo_settings
from toolbox_kd.zoo.ab import AB
from toolbox_kd.zoo.fsp import FSP
from toolbox_kd.zoo.ft import FT

from toolbox import plugins
from toolbox.errors import UsageError
from toolbox.models import build_for
from toolbox.models.mobile import channel_shuffle

TOL = dict(rtol=1e-10, atol=1e-12)


def _spec(name):
    return plugins.load().registry.dataset(name)


def _feats(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]


# --- pre-activation taps --------------------------------------------------------------------------

# RepDistiller's preact feats[1:-1] shapes (channels, height, width) for a 32x32 input, read off its
# models: resnet.py widths 16/32/64 (x4: 64/128/256) at 32/16/8; ShuffleV1 240/480/960 and ShuffleV2
# 116/232/464 at 16/8/4; resnetv2.py 64..512 (x4 for Bottleneck) at 32/16/8/4
PREACT_SHAPES = {
    "resnet8": [(16, 32, 32), (32, 16, 16), (64, 8, 8)],
    "resnet20": [(16, 32, 32), (32, 16, 16), (64, 8, 8)],
    "resnet8x4": [(64, 32, 32), (128, 16, 16), (256, 8, 8)],
    "shufflenetv1": [(240, 16, 16), (480, 8, 8), (960, 4, 4)],
    "shufflenetv2": [(116, 16, 16), (232, 8, 8), (464, 4, 4)],
    "resnet18-cifar": [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)],
    "resnet50-cifar": [(256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)],
}


@pytest.mark.parametrize("arch", sorted(PREACT_SHAPES))
def test_preact_taps_have_the_reference_shapes_and_are_the_groups_before_their_relu(arch):
    torch.manual_seed(0)
    model = build_for(arch, _spec("cifar100")).eval()
    pre_layers = repdistiller_layers(model, arch, "student", preact=True)
    post_layers = repdistiller_layers(model, arch, "student", preact=False)
    assert pre_layers[0] == post_layers[0] and pre_layers[-1] == post_layers[-1]
    pre_tap, post_tap = FeatureTap(model, pre_layers, arch, "student"), FeatureTap(model, post_layers, arch, "student")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # eval mode: both passes compute the same maps
        _, pre = pre_tap(model, x)
        _, post = post_tap(model, x)
    assert [tuple(f.shape[1:]) for f in pre[1:-1]] == PREACT_SHAPES[arch]
    for p, f in zip(pre[1:-1], post[1:-1]):
        assert (p < 0).any()  # a pre-activation, not the ReLU's output
        # ShuffleNetV2's preact is the concatenation before the unit's channel shuffle
        after = channel_shuffle(F.relu(p), 2) if arch == "shufflenetv2" else F.relu(p)
        assert torch.equal(after, f)


# --- AB ---------------------------------------------------------------------------------------------


class RefConvReg(nn.Module):
    """models/util.py ConvReg with use_relu=False: the conv chosen by the heights, then batch norm."""

    def __init__(self, s_shape, t_shape):
        super().__init__()
        s_N, s_C, s_H, s_W = s_shape
        t_N, t_C, t_H, t_W = t_shape
        if s_H == 2 * t_H:
            self.conv = nn.Conv2d(s_C, t_C, kernel_size=3, stride=2, padding=1)
        elif s_H * 2 == t_H:
            self.conv = nn.ConvTranspose2d(s_C, t_C, kernel_size=4, stride=2, padding=1)
        else:
            self.conv = nn.Conv2d(s_C, t_C, kernel_size=(1 + s_H - t_H, 1 + s_W - t_W))
        self.bn = nn.BatchNorm2d(t_C)

    def forward(self, x):
        return self.bn(self.conv(x))


def ref_connector(s_shapes, t_shapes):
    return [nn.Sequential() if s[1] == t[1] and s[2] == t[2] else RefConvReg(s, t) for s, t in zip(s_shapes, t_shapes)]


def ref_ab_loss(g_s, g_t, margin=1.0):
    """ABLoss.forward, then sum(loss_group) as pretrain.init does."""
    feat_num = len(g_s)
    w = [2 ** (i - feat_num + 1) for i in range(feat_num)]
    bsz = g_s[0].shape[0]
    losses = []
    for source, target in zip(g_s, g_t):
        loss = ((source + margin) ** 2 * ((source > -margin) & (target <= 0)).float()
                + (source - margin) ** 2 * ((source <= margin) & (target > 0)).float())
        losses.append(torch.abs(loss).sum())
    losses = [wi * li for wi, li in zip(w, losses)]
    losses = [li / bsz for li in losses]
    losses = [li / 1000 * 3 for li in losses]
    return sum(losses)


# stem, three groups (identity / stride-2 conv / transposed conv connectors), pooled
AB_S = [(4, 16, 8, 8), (4, 16, 8, 8), (4, 32, 8, 8), (4, 64, 2, 2), (4, 64)]
AB_T = [(4, 32, 8, 8), (4, 16, 8, 8), (4, 64, 4, 4), (4, 128, 4, 4), (4, 128)]


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_ab_stage_loss_is_repdistillers_abloss_through_its_connector(margin):
    torch.manual_seed(0)
    ab = AB(zoo_settings.AB(margin=margin), AB_S, AB_T, 100).double().train()
    assert AB.preact and ab.layer_weights == [0.25, 0.5, 1.0]
    assert isinstance(ab.connector[0], nn.Identity)
    ref = ref_connector(AB_S[1:-1], AB_T[1:-1])
    for ours, theirs in zip(ab.connector, ref):
        theirs.load_state_dict(ours.state_dict())
        theirs.double().train()
    s_feats, t_feats = _feats(AB_S, 1), _feats(AB_T, 2)
    s_feats = [f.requires_grad_() for f in s_feats]
    ours = ab.stage(nn.Linear(1, 1)).loss(s_feats, t_feats)
    grads = torch.autograd.grad(ours, s_feats[1:-1])
    theirs = ref_ab_loss([c(f) for c, f in zip(ref, s_feats[1:-1])], t_feats[1:-1], margin)
    ref_grads = torch.autograd.grad(theirs, s_feats[1:-1])
    assert ours.item() > 0
    assert torch.allclose(ours, theirs, **TOL)
    assert all(torch.allclose(a, b, **TOL) for a, b in zip(grads, ref_grads))


def test_ab_stage_trains_the_student_and_the_connector_then_adds_no_term():
    ab = AB(zoo_settings.AB(), AB_S, AB_T, 100)
    student = nn.Linear(3, 2)
    stage = ab.stage(student)
    assert (stage.name, stage.epochs, stage.lr, stage.needs_student) == ("init", 30, None, True)
    assert {id(p) for p in stage.parameters} == {id(p) for p in [*student.parameters(), *ab.connector.parameters()]}
    assert ab(_feats(AB_S, 1), _feats(AB_T, 2)) is None and ab.main_parameters() == []


def test_ab_refuses_a_student_group_it_cannot_map():
    with pytest.raises(UsageError, match="AB cannot map"):
        AB(zoo_settings.AB(), [(2, 16, 8, 8), (2, 16, 2, 2), (2, 16)], [(2, 16, 8, 8), (2, 16, 8, 8), (2, 16)], 10)
    with pytest.raises(UsageError, match="one to one"):
        AB(zoo_settings.AB(), AB_S[:3] + AB_S[-1:], AB_T, 10)


# --- FT ---------------------------------------------------------------------------------------------


class RefParaphraser(nn.Module):
    """models/util.py Paraphraser(t_shape, k=0.5, use_bn=False)."""

    def __init__(self, t_shape, k=0.5):
        super().__init__()
        c_in, c_out = t_shape[1], int(t_shape[1] * k)
        self.encoder = nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, 1, 1), nn.Sequential(), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Sequential(), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1), nn.Sequential(), nn.LeakyReLU(0.1, inplace=True))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c_out, c_out, 3, 1, 1), nn.Sequential(), nn.LeakyReLU(0.1, inplace=True),
            nn.ConvTranspose2d(c_out, c_in, 3, 1, 1), nn.Sequential(), nn.LeakyReLU(0.1, inplace=True),
            nn.ConvTranspose2d(c_in, c_in, 3, 1, 1), nn.Sequential(), nn.LeakyReLU(0.1, inplace=True))

    def forward(self, f_s, is_factor=False):
        factor = self.encoder(f_s)
        if is_factor:
            return factor
        return factor, self.decoder(factor)


def ref_translator(s_shape, t_shape, k=0.5):
    """models/util.py Translator(s_shape, t_shape, k=0.5, use_bn=True)."""
    c_in, c_out = s_shape[1], int(t_shape[1] * k)
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, 1, 1), nn.BatchNorm2d(c_in), nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(c_out, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1, inplace=True))


def ref_factor_transfer(f_s, f_t, p1=2, p2=1):
    """FactorTransfer.factor_loss."""
    s_H, t_H = f_s.shape[2], f_t.shape[2]
    if s_H > t_H:
        f_s = F.adaptive_avg_pool2d(f_s, (t_H, t_H))
    elif s_H < t_H:
        f_t = F.adaptive_avg_pool2d(f_t, (s_H, s_H))

    def factor(f):
        return F.normalize(f.pow(p1).mean(1).view(f.size(0), -1))

    if p2 == 1:
        return (factor(f_s) - factor(f_t)).abs().mean()
    return (factor(f_s) - factor(f_t)).pow(p2).mean()


def _copy_layers(ours: nn.Module, theirs: nn.Module):
    """Our weights into the transcription, layer by layer in order (their empty Sequentials skipped)."""
    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)
    a = [m for m in ours.modules() if isinstance(m, kinds)]
    b = [m for m in theirs.modules() if isinstance(m, kinds)]
    assert [type(m) for m in a] == [type(m) for m in b]
    for x, y in zip(a, b):
        y.load_state_dict(x.state_dict())


def _ft_pair(s_shapes, t_shapes, **settings):
    torch.manual_seed(0)
    ft = FT(zoo_settings.FT(**settings), s_shapes, t_shapes, 100).double()
    para, trans = RefParaphraser(t_shapes[-2]), ref_translator(s_shapes[-2], t_shapes[-2])
    _copy_layers(ft.paraphraser, para)
    _copy_layers(ft.translator, trans)
    return ft, para.double(), trans.double()


def test_ft_stage_is_repdistillers_paraphraser_reconstruction():
    s_shapes, t_shapes = [(4, 16, 4, 4), (4, 32, 4, 4), (4, 32)], [(4, 8, 4, 4), (4, 24, 4, 4), (4, 24)]
    ft, para, _ = _ft_pair(s_shapes, t_shapes)
    assert ft.paraphraser.encoder[-2].out_channels == 12
    ft.train()
    para.train()
    t_feats = _feats(t_shapes, 3)
    ours = ft.stage(nn.Linear(1, 1)).loss(None, t_feats)
    _, rec = para(t_feats[-2])
    assert torch.allclose(ours, nn.MSELoss()(rec, t_feats[-2]), **TOL)


@pytest.mark.parametrize("s_hw, t_hw", [(4, 4), (8, 4), (2, 4)])
@pytest.mark.parametrize("p1, p2", [(2, 1), (1, 2)])
def test_ft_term_is_repdistillers_factor_transfer_between_translator_and_paraphraser(s_hw, t_hw, p1, p2):
    s_shapes = [(4, 16, 8, 8), (4, 24, s_hw, s_hw), (4, 24)]
    t_shapes = [(4, 16, 8, 8), (4, 40, t_hw, t_hw), (4, 40)]
    ft, para, trans = _ft_pair(s_shapes, t_shapes, p1=p1, p2=p2)
    ft.train()
    trans.train()
    para.eval()  # loops.py: module_list[2].eval()
    s_feats, t_feats = _feats(s_shapes, 4), _feats(t_shapes, 5)
    s_feats[-2].requires_grad_()
    ours = ft(s_feats, t_feats)
    assert not ft.paraphraser.training and ft.translator.training
    theirs = ref_factor_transfer(trans(s_feats[-2]), para(t_feats[-2], is_factor=True), p1, p2)
    assert ours.item() > 0
    assert torch.allclose(ours, theirs, **TOL)
    g, = torch.autograd.grad(ours, s_feats[-2])
    ref_g, = torch.autograd.grad(theirs, s_feats[-2])
    assert torch.allclose(g, ref_g, **TOL)
    assert all(p.grad is None for p in ft.paraphraser.parameters())  # frozen: no gradient reaches it


@pytest.mark.parametrize("arch, lr", [("wrn-16-1", 0.01), ("resnet8", 0.01), ("vgg8", None), ("resnet18-cifar", None)])
def test_ft_stage_trains_the_paraphraser_alone_at_the_references_rate(arch, lr):
    s_shapes, t_shapes = [(2, 16, 4, 4), (2, 32, 4, 4), (2, 32)], [(2, 16, 4, 4), (2, 64, 4, 4), (2, 64)]
    ft = FT(zoo_settings.FT(), s_shapes, t_shapes, 100)
    stage = ft.stage(build_for(arch, _spec("digits")))
    assert (stage.name, stage.epochs, stage.lr, stage.needs_student) == ("paraphraser", 30, lr, False)
    assert {id(p) for p in stage.parameters} == {id(p) for p in ft.paraphraser.parameters()}
    assert {id(p) for p in ft.main_parameters()} == {id(p) for p in ft.translator.parameters()}


# --- FSP --------------------------------------------------------------------------------------------


def ref_fsp_loss(g_s, g_t):
    """FSP.forward (compute_fsp on each list, (s - t)^2 mean per pair), summed as pretrain.init does."""

    def compute_fsp(g):
        fsp_list = []
        for i in range(len(g) - 1):
            bot, top = g[i], g[i + 1]
            b_H, t_H = bot.shape[2], top.shape[2]
            if b_H > t_H:
                bot = F.adaptive_avg_pool2d(bot, (t_H, t_H))
            elif b_H < t_H:
                top = F.adaptive_avg_pool2d(top, (b_H, b_H))
            bot = bot.unsqueeze(1)
            top = top.unsqueeze(2)
            bot = bot.view(bot.shape[0], bot.shape[1], bot.shape[2], -1)
            top = top.view(top.shape[0], top.shape[1], top.shape[2], -1)
            fsp_list.append((bot * top).mean(-1))
        return fsp_list

    return sum((s - t).pow(2).mean() for s, t in zip(compute_fsp(g_s), compute_fsp(g_t)))


FSP_S = [(3, 16, 8, 8), (3, 16, 8, 8), (3, 32, 4, 4), (3, 64, 2, 2), (3, 64)]


def test_fsp_stage_loss_is_repdistillers_fsp_over_stem_and_groups():
    fsp = FSP(zoo_settings.FSP(), FSP_S, FSP_S, 100)
    s_feats, t_feats = _feats(FSP_S, 6), _feats(FSP_S, 7)
    s_feats = [f.requires_grad_() for f in s_feats]
    student = nn.Linear(3, 2)
    stage = fsp.stage(student)
    assert (stage.name, stage.epochs, stage.lr, stage.needs_student) == ("init", 30, None, True)
    assert {id(p) for p in stage.parameters} == {id(p) for p in student.parameters()}
    ours = stage.loss(s_feats, t_feats)
    theirs = ref_fsp_loss(s_feats[:-1], t_feats[:-1])
    assert ours.item() > 0
    assert torch.allclose(ours, theirs, **TOL)
    grads = torch.autograd.grad(ours, s_feats[:-1])
    ref_grads = torch.autograd.grad(theirs, s_feats[:-1])
    assert all(torch.allclose(a, b, **TOL) for a, b in zip(grads, ref_grads))
    assert fsp(s_feats, t_feats) is None and fsp.main_parameters() == []


def test_fsp_refuses_different_widths_naming_the_maps():
    wide = [(2, 32, 8, 8), (2, 32, 8, 8), (2, 64, 4, 4), (2, 64, 2, 2), (2, 64)]
    with pytest.raises(UsageError, match=r"stem 16 vs 32, group 1 16 vs 32, group 2 32 vs 64$|group 2 32 vs 64\)"):
        FSP(zoo_settings.FSP(), FSP_S, wide, 10)
    with pytest.raises(UsageError, match="one to one"):
        FSP(zoo_settings.FSP(), FSP_S[:2] + FSP_S[-1:], FSP_S, 10)


def test_ft_refuses_a_rate_that_leaves_no_factor_channel():
    with pytest.raises(UsageError, match=r"loss.ft.rate=0.01 leaves no factor channel of the teacher's 64; use a rate"):
        FT(zoo_settings.FT(rate=0.01), [(2, 8, 8, 8), (2, 16, 4, 4), (2, 16)], [(2, 8, 8, 8), (2, 64, 4, 4), (2, 64)], 10)
