"""The distillation zoo's core: RepDistiller's feature lists on every CIFAR architecture, its loss
composition, FitNet and PKT against transcriptions of its code, and staged runs that resume exactly.
The bad-input lines (unknown distiller, missing tap, untapped architecture) are rows of test_bad_input."""

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from toolbox_kd import zoo
from toolbox_kd.features import FeatureTap, repdistiller_layers
from toolbox_kd.method import kd_objective, zoo_objective
from toolbox_kd.recipe import KDRecipe
from toolbox_kd.zoo.fitnet import FitNet
from toolbox_kd.zoo.pkt import PKT
from toolbox_kd.zoo.settings import FitNet as FitNetSettings

from toolbox import runs
from toolbox.errors import UsageError
from toolbox.models import build_for

# RepDistiller's model(x, is_feat=True) on a (2, 3, 32, 32) batch, 100 classes: the shapes of each
# entry without the batch, read once by running its models/ (outside this project)
REPDISTILLER_FEATURES = {
    "wrn-40-2": [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8), (128,)],
    "wrn-16-2": [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8), (128,)],
    "resnet56": [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (64,)],
    "resnet20": [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (64,)],
    "resnet32x4": [(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (256,)],
    "resnet8x4": [(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (256,)],
    "vgg13": [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4), (512,)],
    "vgg8": [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4), (512,)],
    "mobilenetv2": [(16, 16, 16), (12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2), (1280,)],
    "shufflenetv1": [(24, 32, 32), (240, 16, 16), (480, 8, 8), (960, 4, 4), (960,)],
    "shufflenetv2": [(24, 32, 32), (116, 16, 16), (232, 8, 8), (464, 4, 4), (1024,)],
    "resnet50-cifar": [(64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4), (2048,)],
}


class _Spec:
    num_classes, shape = 100, (3, 32, 32)


@pytest.mark.parametrize("arch", REPDISTILLER_FEATURES)
def test_taps_give_repdistillers_feature_list(arch):
    torch.manual_seed(0)
    model = build_for(arch, _Spec()).eval()
    tap = FeatureTap(model, repdistiller_layers(model, arch, "student"), arch, "student")
    x = torch.randn(2, 3, 32, 32)
    logits, feats = tap(model, x)
    assert [tuple(f.shape[1:]) for f in feats] == REPDISTILLER_FEATURES[arch]
    # the pooled vector is what the classifier reads, and the tap leaves the forward unchanged
    classifier = dict(model.named_modules())[model.pooled_layer.removesuffix(":in")]
    assert torch.allclose(classifier(feats[-1]), logits, atol=1e-5)
    assert torch.equal(model(x), logits)


# --- transcriptions of RepDistiller's code (distiller_zoo/, models/util.py, helper/loops.py) -------------

def _ref_distill_kl(y_s, y_t, T):  # distiller_zoo/KD.py DistillKL
    p_s = F.log_softmax(y_s / T, dim=1)
    p_t = F.softmax(y_t / T, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * (T ** 2) / y_s.shape[0]


def _ref_conv_reg(reg, s_shape, t_shape, x):  # models/util.py ConvReg.forward with our module's weights
    s_H, t_H = s_shape[2], t_shape[2]
    if s_H == 2 * t_H:
        x = F.conv2d(x, reg.conv.weight, reg.conv.bias, stride=2, padding=1)
    elif s_H * 2 == t_H:
        x = F.conv_transpose2d(x, reg.conv.weight, reg.conv.bias, stride=2, padding=1)
    else:
        x = F.conv2d(x, reg.conv.weight, reg.conv.bias)
    x = F.batch_norm(x, None, None, reg.bn.weight, reg.bn.bias, training=True, eps=1e-5)
    return F.relu(x)


def _ref_pkt(output_net, target_net, eps=0.0000001):  # distiller_zoo/PKT.py cosine_similarity_loss
    output_net = output_net.clone()
    target_net = target_net.clone()
    output_net_norm = torch.sqrt(torch.sum(output_net ** 2, dim=1, keepdim=True))
    output_net = output_net / (output_net_norm + eps)
    output_net[output_net != output_net] = 0
    target_net_norm = torch.sqrt(torch.sum(target_net ** 2, dim=1, keepdim=True))
    target_net = target_net / (target_net_norm + eps)
    target_net[target_net != target_net] = 0
    model_similarity = torch.mm(output_net, output_net.transpose(0, 1))
    target_similarity = torch.mm(target_net, target_net.transpose(0, 1))
    model_similarity = (model_similarity + 1.0) / 2.0
    target_similarity = (target_similarity + 1.0) / 2.0
    model_similarity = model_similarity / torch.sum(model_similarity, dim=1, keepdim=True)
    target_similarity = target_similarity / torch.sum(target_similarity, dim=1, keepdim=True)
    return torch.mean(target_similarity * torch.log((target_similarity + eps) / (model_similarity + eps)))


@pytest.mark.parametrize("s_hw, t_hw", [(16, 8), (4, 8), (8, 8), (10, 8)], ids=["stride2", "transposed", "same", "valid"])
def test_fitnet_is_repdistillers_hint_loss_through_its_conv_regressor(s_hw, t_hw):
    torch.manual_seed(0)
    s_shapes = [(2, 8, 32, 32), (2, 6, 16, 16), (2, 5, s_hw, s_hw), (2, 4)]
    t_shapes = [(2, 8, 32, 32), (2, 6, 16, 16), (2, 7, t_hw, t_hw), (2, 4)]
    fit = FitNet(FitNetSettings(), s_shapes, t_shapes, n_data=10).double()
    f_s = torch.randn(4, 5, s_hw, s_hw, dtype=torch.float64, requires_grad=True)
    f_t = torch.randn(4, 7, t_hw, t_hw, dtype=torch.float64)
    ours = fit([None, None, f_s, None], [None, None, f_t, None])
    ref = F.mse_loss(_ref_conv_reg(fit.regressor, s_shapes[2], t_shapes[2], f_s), f_t)  # HintLoss: nn.MSELoss()
    assert torch.allclose(ours, ref, rtol=1e-12)
    g_ours, = torch.autograd.grad(ours, f_s)
    g_ref, = torch.autograd.grad(ref, f_s)
    assert torch.allclose(g_ours, g_ref, rtol=1e-10) and g_ref.abs().sum() > 0


def test_fitnet_refuses_a_hint_no_regressor_maps_in_one_line():
    with pytest.raises(UsageError, match="cannot map a 3x3 student hint onto a 8x8 teacher hint; pick another"):
        FitNet(FitNetSettings(hint_layer=1), [(2, 3, 8, 8), (2, 4, 3, 3), (2, 9)], [(2, 3, 8, 8), (2, 4, 8, 8), (2, 9)], 10)


def test_pkt_is_repdistillers_cosine_similarity_loss():
    torch.manual_seed(0)
    f_s = torch.randn(16, 32, dtype=torch.float64, requires_grad=True)
    f_t = torch.randn(16, 48, dtype=torch.float64)
    f_t[3] = 0  # a zero row: the reference's NaN guard
    ours = PKT(None, [], [], 16)([f_s], [f_t])
    ref = _ref_pkt(f_s, f_t)
    assert torch.allclose(ours, ref, rtol=1e-12)
    assert torch.allclose(torch.autograd.grad(ours, f_s)[0], torch.autograd.grad(ref, f_s)[0], rtol=1e-10)


@pytest.mark.parametrize("kind", ["pkt", "kd+pkt"])
def test_composed_zoo_loss_is_repdistillers_gamma_alpha_beta_sum(kind):
    torch.manual_seed(0)
    recipe = KDRecipe.model_validate({"method": "kd", "loss": {"kind": kind, "ce_weight": 0.7, "kd_weight": 1.3,
                                                               "temperature": 3.0, "pkt": {"weight": 5.0}}})
    s, t, y, term = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,)), torch.tensor(0.25)
    alpha = 1.3 if kind == "kd+pkt" else 0.0  # -a: 0 unless combined with KD
    ref = 0.7 * nn.CrossEntropyLoss()(s, y) + alpha * _ref_distill_kl(s, t, 3.0) + 5.0 * term
    assert torch.allclose(zoo_objective(recipe.loss, term, s, y, t), ref)


# --- staged runs and bad input -----------------------------------------------------------------------------

def test_a_staged_run_resumes_exactly_from_either_stage(digits_teacher, tmp_path, monkeypatch):
    """FitNet with its hint stage: 3 shots per class scale each epoch by 1352 / 30 (one batch each), so
    steps 1-45 are the hint stage and 46-135 distillation. A run killed in each stage resumes to
    the uninterrupted run's weights and metrics."""
    torch.set_num_threads(1)
    args = ["loss.kind=fitnet", "loss.fitnet.hint_epochs=1", "schedule.epochs=2", "schedule.milestones=[1]",
            "checkpoint_every=10", "data.shots=3", "eval_every=1000", "student.arch=resnet8",
            f"teacher.source={digits_teacher}"]
    whole, _ = runs.execute("distill", "kd", "kd/digits-kdat-m5", args, out=tmp_path / "whole", device="cpu")
    rows = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "hint_loss" in r] == list(range(1, 46))  # the stage's own series
    assert [r["step"] for r in rows if "train_loss" in r] == list(range(46, 136))
    assert json.loads((whole / "run.json").read_text())["records"]["stages"]["hint"]["epochs"] == [0, 45]
    real_log = runs.Run.log
    for cut in (25, 70):  # last checkpoints: 20 (hint stage), 60 (distillation, after the stage's own at 45)
        def dying_log(self, step, cut=cut, **metrics):
            real_log(self, step, **metrics)
            if step == cut:
                raise KeyboardInterrupt

        monkeypatch.setattr(runs.Run, "log", dying_log)
        with pytest.raises(Exception, match="interrupted"):
            runs.execute("distill", "kd", "kd/digits-kdat-m5", args, out=tmp_path / f"cut{cut}", device="cpu")
        monkeypatch.setattr(runs.Run, "log", real_log)
        resumed, _ = runs.execute("distill", "kd", device="cpu", resume=tmp_path / f"cut{cut}")
        assert (resumed / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes(), cut
        assert (resumed / "metrics.jsonl").read_text().count("\n") == (whole / "metrics.jsonl").read_text().count("\n")


# the stages at one epoch (scaled like the rest) keep the end-to-end runs short; FT keeps its recipe's 4:
# its translator only has a target once the paraphraser has learnt the teacher's map (1 epoch: 21 %, 4: 45 %)
ONE_STAGE_EPOCH = {"ab": ["loss.ab.init_epochs=1"], "fsp": ["loss.fsp.init_epochs=1"],
                   "mhgd": ["loss.mhgd.init_epochs=1"], "iep": ["loss.iep.init_epochs=1"]}


@pytest.mark.parametrize("name", list(zoo.DISTILLERS))
def test_every_distiller_teaches_a_few_shot_digits_student_end_to_end(name, digits_teacher, tmp_path):
    """Its digits recipe (5 images per class, the reference's weights), 2 epochs of the full-data
    schedule (54 one-batch epochs): the student ends far above chance (10 %)."""
    torch.set_num_threads(1)
    out, metrics = runs.execute("distill", "kd", f"kd/digits-{name}-m5",
                                ["schedule.epochs=2", f"teacher.source={digits_teacher}", *ONE_STAGE_EPOCH.get(name, [])],
                                out=tmp_path / name, device="cpu")
    assert metrics["accuracy"] > 0.3, metrics
    assert json.loads((out / "config.json").read_text())["loss"]["kind"] == name


def _ref_attention(g_s, g_t, p=2):  # distiller_zoo/AT.py Attention.forward / at_loss / at
    def at(f):
        return F.normalize(f.pow(p).mean(1).view(f.size(0), -1))

    losses = []
    for f_s, f_t in zip(g_s, g_t):
        s_H, t_H = f_s.shape[2], f_t.shape[2]
        if s_H > t_H:
            f_s = F.adaptive_avg_pool2d(f_s, (t_H, t_H))
        elif s_H < t_H:
            f_t = F.adaptive_avg_pool2d(f_t, (s_H, s_H))
        losses.append((at(f_s) - at(f_t)).pow(2).mean())
    return losses


def test_at_with_pooling_is_repdistillers_attention_loss_on_maps_of_other_sizes():
    """loss.at_pool: AT between maps of different resolutions, as RepDistiller's cross-type recipes run it
    (CE + -b 1000 * sum over the pairs)."""
    torch.manual_seed(0)
    recipe = KDRecipe.model_validate({"method": "kd", "loss": {"kind": "at", "at_weight": 1000.0, "at_pool": True}})
    s, y = torch.randn(4, 10, dtype=torch.float64), torch.randint(0, 10, (4,))
    g_s = [torch.randn(4, 8, 16, 16, dtype=torch.float64, requires_grad=True), torch.randn(4, 6, 4, 4, dtype=torch.float64)]
    g_t = [torch.randn(4, 5, 8, 8, dtype=torch.float64), torch.randn(4, 7, 8, 8, dtype=torch.float64)]
    ours = kd_objective(recipe.loss, s, y, None, g_s, g_t)
    ref = F.cross_entropy(s, y) + 1000.0 * sum(_ref_attention(g_s, g_t))
    assert torch.allclose(ours, ref, rtol=1e-12)
    assert torch.allclose(torch.autograd.grad(ours, g_s[0])[0], torch.autograd.grad(ref, g_s[0])[0], rtol=1e-10)
