"""The gradient combination of MHGD's and IEP's optimiser (toolbox_kd.zoo.clip, the KD method's
``kd_clip_step``) against a literal transcription of sseung0703/KD_methods_with_TF op_util.py
``Optimizer_w_MHGD`` (the three compute_gradients, the clip_grad loop, ``sigmoid``), TF 1.x's
``clip_by_norm`` and one step of ``MomentumOptimizer(LR, 0.9, use_nesterov=True)``, on a tiny
student/teacher pair in float64 with a toy term (the combination does not depend on the term)."""

import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from toolbox_kd.method import kd_clip_step
from toolbox_kd.recipe import KDRecipe
from toolbox_kd.zoo.base import Distiller
from toolbox_kd.zoo.clip import warmup

from toolbox import engine
from toolbox.errors import UsageError
from toolbox.recipes import apply_overrides

LR, MOMENTUM, WD = 0.1, 0.9, 5e-4
INIT_EPOCH, STEPS_PER_EPOCH = 5, 3


# ---- transcription of op_util.py (and of the TF 1.x ops it calls) -------------------------------------

def sigmoid(x, k, d=1):
    s = 1 / (1 + math.exp(-(x - k) / d))
    return 1.0 if s > 1 - 1e-8 else s


def tf_clip_by_norm(t, clip_norm):
    l2sum = torch.sum(t * t)
    pred = l2sum > 0
    l2sum_safe = torch.where(pred, l2sum, torch.ones_like(l2sum))
    l2norm = torch.where(pred, torch.sqrt(l2sum_safe), l2sum)
    intermediate = t * clip_norm
    return intermediate / torch.maximum(l2norm, clip_norm)


def compute_gradients(loss, var_list):
    return list(zip(torch.autograd.grad(loss, var_list, retain_graph=True, allow_unused=True), var_list))


def l2_regularizer(scale, v):  # tcl.l2_regularizer: scale * tf.nn.l2_loss(v)
    return scale * torch.sum(v ** 2) / 2


def optimizer_w_mhgd_gradients(class_loss, reg_loss, distillation_loss, variables, epoch, init_epoch):
    gradients = compute_gradients(class_loss, variables)
    gradients_wdecay = compute_gradients(reg_loss, variables)
    gradients_dist = compute_gradients(distillation_loss, variables)
    for i, (gc, gw, gd) in enumerate(zip(gradients, gradients_wdecay, gradients_dist)):
        gw = 0. if gw[0] is None else gw[0]
        if gd[0] is not None:
            norm = torch.sqrt(torch.sum(torch.square(gc[0]))) * sigmoid(epoch - init_epoch, 0)
            gd = tf_clip_by_norm(gd[0], norm)
            gradients[i] = (gw + gc[0] + gd, gc[1])
        elif gc[0] is not None:
            gradients[i] = (gw + gc[0], gc[1])
    return gradients


def nesterov_first_step(grad, var):
    """MomentumOptimizer(use_nesterov=True) from a zero accumulator: accum = g; var -= lr (g + m accum)."""
    accum = grad
    return var - LR * (grad + MOMENTUM * accum)


# ---- a tiny pair ---------------------------------------------------------------------------------------

class Net(nn.Module):
    """logits and features [conv map, side map]; ``side`` feeds the features only (the task cannot reach
    it) and ``unused`` feeds nothing."""

    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.fc = nn.Linear(width, 4)
        self.side = nn.Conv2d(1, 2, 1)
        self.unused = nn.Parameter(torch.randn(3))

    def forward(self, x):
        f = torch.relu(self.conv(x))
        return self.fc(f.mean((2, 3))), [f, self.side(x)]


class Toy(Distiller):
    """A term with a width adapter of its own (trained beside the student, as MHGD's and IEP's)."""

    def __init__(self):
        super().__init__(None, [], [], 0)
        self.adapter = nn.Conv2d(3, 5, 1, bias=False)

    def forward(self, s_feats, t_feats, index=None):
        return (self.adapter(s_feats[0]) - t_feats[0]).pow(2).sum() + (s_feats[1] - t_feats[1]).pow(2).sum()


def tap(forward, x):
    return forward(x)


def setup(kind, weight=1e-3, ce_weight=0.9, kd_weight=0.7):
    torch.manual_seed(0)
    student, teacher, toy = Net(3).double(), Net(5).double().eval().requires_grad_(False), Toy().double()
    recipe = KDRecipe.model_validate(apply_overrides({"method": "kd"}, [
        f"loss.kind={kind}", "data.augment=none", f"loss.mhgd.weight={weight}", f"loss.ce_weight={ce_weight}",
        f"loss.kd_weight={kd_weight}"]))
    opt = torch.optim.SGD(list(student.parameters()) + toy.main_parameters(), lr=LR, momentum=MOMENTUM,
                          nesterov=True, weight_decay=WD)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with warnings.catch_warnings():  # the scheduler stepped without the optimiser: the epochs distilled so far
        warnings.simplefilter("ignore")
        for _ in range(2 * STEPS_PER_EPOCH + 1):  # in the third epoch of distillation
            sched.step()
    trainer = engine.Engine(None, student, opt, sched, device=torch.device("cpu"))
    x = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (6,))
    return recipe, student, teacher, toy, trainer, x, y


def reference_step(recipe, student, teacher, toy, x, y, side=False):
    """The reference's new weights: student variables through Optimizer_w_MHGD, class_loss the task side
    (ce_weight CE [+ kd_weight T^2 KL]), distillation_loss the weighted term."""
    logits, s_feats = student(x)
    with torch.no_grad():
        t_logits, t_feats = teacher(x)
    class_loss = recipe.loss.ce_weight * F.cross_entropy(logits, y)
    if recipe.loss.kind.startswith("kd+"):
        T = recipe.loss.temperature
        class_loss = class_loss + recipe.loss.kd_weight * T * T * F.kl_div(
            F.log_softmax(logits / T, 1), F.softmax(t_logits / T, 1), reduction="batchmean")
    distillation_loss = recipe.loss.mhgd.weight * ((toy.adapter(s_feats[0]) - t_feats[0]).pow(2).sum()
                                                   + (s_feats[1] - t_feats[1]).pow(2).sum())
    # side: the term reaches it and the task does not, where the reference's graph does not build (tested below)
    variables = [p for n, p in student.named_parameters() if side or not n.startswith("side.")]
    reg_loss = sum(l2_regularizer(WD, v) for v in variables)
    gradients = optimizer_w_mhgd_gradients(class_loss, reg_loss, distillation_loss, variables, INIT_EPOCH + 2, INIT_EPOCH)
    return {id(v): None if g is None else nesterov_first_step(g, v).detach() for g, v in gradients}, \
        class_loss + distillation_loss


@pytest.mark.parametrize("kind", ["mhgd", "kd+mhgd"])
def test_one_clipped_step_is_op_util_optimizer_w_mhgd(kind):
    recipe, student, teacher, toy, trainer, x, y = setup(kind)
    expected, expected_loss = reference_step(recipe, student, teacher, toy, x, y)
    # the clip binds for some variables and not for others (else the test would not tell them apart)
    logits, s_feats = student(x)
    task = recipe.loss.ce_weight * F.cross_entropy(logits, y)
    term = recipe.loss.mhgd.weight * toy(s_feats, teacher(x)[1])
    gc = torch.autograd.grad(task, [student.conv.weight, student.conv.bias], retain_graph=True)
    gd = torch.autograd.grad(term, [student.conv.weight, student.conv.bias])
    clipped = [b.norm() > a.norm() * warmup(2) for a, b in zip(gc, gd)]
    assert any(clipped) and not all(clipped)

    step = kd_clip_step(recipe, trainer, teacher, tap, tap, torch.Generator(), toy, STEPS_PER_EPOCH)
    loss = step(trainer, x, y)
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=0, atol=1e-10)
    for name, p in student.named_parameters():
        if name in ("conv.weight", "conv.bias", "fc.weight", "fc.bias"):
            torch.testing.assert_close(p.detach(), expected[id(p)], rtol=0, atol=1e-10, msg=name)


def test_variables_the_task_does_not_reach():
    """Reference: gd None -> gw + gc (the classifier); gc and gd None -> no update, not even the decay.
    Its graph does not build where gd exists without gc (tf.square(None)); here gc counts as zero, so
    the term is clipped to nothing and only the decay moves the variable. The distiller's own adapter
    (the reference has none) takes the term's gradient unclipped."""
    recipe, student, teacher, toy, trainer, x, y = setup("mhgd")
    expected, _ = reference_step(recipe, student, teacher, toy, x, y)
    with pytest.raises(TypeError, match="NoneType"):  # tf.square(None)
        reference_step(recipe, student, teacher, toy, x, y, side=True)
    logits, s_feats = student(x)
    gd_adapter = torch.autograd.grad(recipe.loss.mhgd.weight * toy(s_feats, teacher(x)[1]), toy.adapter.weight)[0]
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    adapter_before = toy.adapter.weight.detach().clone()

    kd_clip_step(recipe, trainer, teacher, tap, tap, torch.Generator(), toy, STEPS_PER_EPOCH)(trainer, x, y)
    torch.testing.assert_close(student.fc.weight.detach(), expected[id(student.fc.weight)], rtol=0, atol=1e-10)
    assert expected[id(student.unused)] is None and student.unused.grad is None
    assert torch.equal(student.unused.detach(), before["unused"])
    for name in ("side.weight", "side.bias"):
        assert torch.equal(getattr(student.side, name.split(".")[1]).grad, torch.zeros_like(before[name]))
        torch.testing.assert_close(getattr(student.side, name.split(".")[1]).detach(),
                                   nesterov_first_step(WD * before[name], before[name]), rtol=0, atol=1e-12)
    torch.testing.assert_close(toy.adapter.weight.grad, gd_adapter, rtol=0, atol=1e-10)
    torch.testing.assert_close(toy.adapter.weight.detach(),
                               nesterov_first_step(gd_adapter + WD * adapter_before, adapter_before), rtol=0, atol=1e-10)


def test_the_warm_up_is_op_util_sigmoid_of_the_epochs_distilled():
    assert warmup(0) == 0.5
    assert [warmup(e) for e in range(25)] == [sigmoid(e + INIT_EPOCH, INIT_EPOCH) for e in range(25)]
    assert warmup(18) < 1.0 and warmup(19) == 1.0


def test_a_clip_without_a_task_gradient_is_refused():
    recipe, student, teacher, toy, trainer, x, y = setup("mhgd", ce_weight=0.0)
    with pytest.raises(UsageError, match="ce_weight=0"):
        kd_clip_step(recipe, trainer, teacher, tap, tap, torch.Generator(), toy, STEPS_PER_EPOCH)


def test_mhgd_and_iep_clip_by_default():
    recipe = KDRecipe.model_validate(apply_overrides({"method": "kd"}, []))
    assert recipe.loss.mhgd.clip_to_ce and recipe.loss.iep.clip_to_ce
