"""KD, attention transfer and few-shot KD+AT against transcriptions of the reference code.

References (read, transcribed here in our own words, never imported):
- szagoruyko/attention-transfer, utils.py: ``distillation`` (Hinton KD: summed KL times T^2 over the
  batch size, weight alpha; CE weight 1 - alpha), ``at`` and ``at_loss``; cifar.py adds
  ``beta * sum(at_loss per group)``.
- polo5/ZeroShotKnowledgeTransfer, solver.py ``divergence`` / ``KT_loss_student`` / ``KT_loss_generator``:
  KL(log_softmax(s / T), softmax(t / T)) with the elementwise-mean reduction and no T^2 factor, plus
  AT_beta * attention_diff per group (no 3 / n rescaling); the generator minimises -KL.
- polo5/FewShotKnowledgeTransfer, solver.py ``KT_loss`` (modes KD, AT, KD+AT: KL with PyTorch 1.0's
  default reduction, the mean over batch *and* classes, weighted 2 alpha T^2; AT weight beta * 3 / n
  for n attention pairs) and main.py (epochs and milestones scaled by N / (classes M), truncated by
  int(); the scheduler is stepped with ``step(epoch=e)`` after epoch e).

Everything is compared in float64 so that a difference in the formula, not rounding, is what fails.
"""

from bisect import bisect_right

import pytest
import torch
from toolbox_kd.features import FeatureTap, default_layers
from toolbox_kd.method import kd_objective
from toolbox_kd.recipe import KDRecipe
from toolbox_kd.shots import scaled_schedule, step_schedule
from toolbox_zskt.game import generator_loss, student_loss

from toolbox.losses import attention_loss, attention_map
from toolbox.models.wrn import WideResNet
from toolbox.recipes import apply_overrides

TOL = dict(rtol=1e-12, atol=1e-12)


def _loss(**kw):
    return KDRecipe.model_validate(apply_overrides({"method": "kd"}, [f"loss.{k}={v}" for k, v in kw.items()])).loss


def _log_softmax(z):
    z = z - z.max(dim=1, keepdim=True).values
    return z - z.exp().sum(dim=1, keepdim=True).log()


def _kl_terms(student_logits, teacher_logits, T):
    """Elementwise q (log q - log p) of kl_div(log_softmax(s / T), softmax(t / T)): teacher is the target."""
    log_q = _log_softmax(teacher_logits / T)
    return log_q.exp() * (log_q - _log_softmax(student_logits / T))


def _cross_entropy(logits, labels):
    return -_log_softmax(logits)[torch.arange(len(labels)), labels].mean()


# --- szagoruyko/attention-transfer --------------------------------------------------------------

def at_repo_distillation(y, teacher_scores, labels, T, alpha):
    """utils.distillation: KL summed (size_average=False) times T^2 over the batch size, plus CE."""
    l_kl = _kl_terms(y, teacher_scores, T).sum() * T**2 / y.shape[0]
    return l_kl * alpha + _cross_entropy(y, labels) * (1.0 - alpha)


def at_repo_at(x):
    """utils.at: per sample, channel mean of x^2, flattened, divided by its L2 norm (eps 1e-12)."""
    a = x.pow(2).mean(1).reshape(x.size(0), -1)
    return a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)


def at_repo_at_loss(x, y):
    """utils.at_loss: mean over batch and positions of the squared difference of the maps."""
    return (at_repo_at(x) - at_repo_at(y)).pow(2).mean()


def at_repo_total(y_s, y_t, g_s, g_t, labels, T, alpha, beta):
    """cifar.py h(): distillation + beta * sum over groups of at_loss."""
    return at_repo_distillation(y_s, y_t, labels, T, alpha) + beta * sum(at_repo_at_loss(s, t) for s, t in zip(g_s, g_t))


# --- polo5/FewShotKnowledgeTransfer -------------------------------------------------------------

def few_shot_kt_loss(mode, labels, s_logits, s_acts, t_logits, t_acts, alpha=0.9, T=4.0, beta=1000.0):
    """solver.KT_loss. kl_div's default reduction in PyTorch 1.0 is the mean over every element."""
    ce = _cross_entropy(s_logits, labels)
    kl = _kl_terms(s_logits, t_logits, T).mean()
    adjusted_beta = beta * 3 / len(s_acts)  # "default given beta is for 3 attention terms"
    if mode == "KD":
        return (1.0 - alpha) * ce + (2 * alpha * T**2) * kl
    at = sum(adjusted_beta * at_repo_at_loss(s, t) for s, t in zip(s_acts, t_acts))
    if mode == "AT":
        return ce + at
    return (1.0 - alpha) * ce + (2 * alpha * T**2) * kl + at


def few_shot_schedule(n_images, n_classes, m, base_epochs, base_steps, scale_n_iters=1):
    """main.py: epochs and lr decay steps times scale_n_iters * N / (classes M), truncated."""
    scale = scale_n_iters * n_images / (n_classes * m)
    return int(base_epochs * scale), [int(i * scale) for i in base_steps]


def few_shot_lr(epoch, lr, milestones, gamma):
    """The learning rate epoch ``epoch`` (0-based) trains with: the scheduler starts at ``lr`` and is then
    stepped with step(epoch=e) after epoch e, i.e. MultiStepLR's closed form at last_epoch = epoch - 1."""
    return lr if epoch == 0 else lr * gamma ** bisect_right(sorted(milestones), epoch - 1)


# --- inputs -------------------------------------------------------------------------------------

def _logits(seed=0, batch=7, classes=10):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 3
    t = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 3
    return s, t, torch.randint(0, classes, (batch,), generator=g)


def _wrn_pair(seed=0):
    """A WRN-16-1 student and a WRN-16-2 teacher (float64), their group outputs on digits-sized input."""
    torch.manual_seed(seed)
    student = WideResNet(16, 1, num_classes=10, in_channels=1, image_size=8).double().train()
    teacher = WideResNet(16, 2, num_classes=10, in_channels=1, image_size=8).double().eval()
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 10, (6,))
    return student, teacher, x, y


def test_hinton_kd_equals_the_attention_transfer_repos_distillation():
    s, t, y = _logits()
    for T, alpha in ((4.0, 0.9), (1.0, 0.5), (20.0, 0.3), (2.0, 0.0)):
        ours = kd_objective(_loss(kind="kd", kl_reduction="batchmean", alpha=alpha, temperature=T), s, y, t)
        ref = at_repo_distillation(s, t, y, T, alpha)
        assert torch.allclose(ours, ref, **TOL), (T, alpha, (ours - ref).abs().item())


def test_attention_map_and_loss_equal_the_attention_transfer_repo():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(5, 16, 8, 8, generator=g, dtype=torch.float64)
    teacher = torch.randn(5, 32, 8, 8, generator=g, dtype=torch.float64) * 4
    assert torch.allclose(attention_map(student), at_repo_at(student), **TOL)
    assert attention_map(student).shape == (5, 64)
    assert torch.allclose(attention_map(student).norm(dim=1), torch.ones(5, dtype=torch.float64), **TOL)
    assert torch.allclose(attention_loss(student, teacher), at_repo_at_loss(student, teacher), **TOL)
    # a map of zeros (a dead ReLU group) stays zero, as F.normalize's eps makes it in the reference
    zero = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    assert torch.equal(attention_map(zero), at_repo_at(zero))


def test_our_feature_taps_give_the_group_outputs_the_reference_wrn_returns():
    """The reference WRN's forward returns (logits, group1, group2, group3); ours takes them with hooks."""
    student, teacher, x, _ = _wrn_pair()
    for net, name, role in ((student, "wrn-16-1", "student"), (teacher, "wrn-16-2", "teacher")):
        tap = FeatureTap(net, default_layers(net, name, role), name, role)
        torch.manual_seed(0)
        logits, feats = tap(net, x)
        ref_logits, ref_feats = net.forward_features(x)
        assert torch.equal(logits, ref_logits) and len(feats) == 3
        assert all(torch.equal(a, b) for a, b in zip(feats, ref_feats))


def test_kd_plus_at_equals_the_attention_transfer_repos_total_on_wrn_groups():
    student, teacher, x, y = _wrn_pair()
    s_logits, s_feats = student.forward_features(x)
    with torch.no_grad():
        t_logits, t_feats = teacher.forward_features(x)
    for T, alpha, beta in ((4.0, 0.9, 1000.0), (1.0, 0.5, 10.0)):
        ours = kd_objective(_loss(kind="kd+at", kl_reduction="batchmean", alpha=alpha, temperature=T, at_weight=beta),
                            s_logits, y, t_logits, s_feats, t_feats)
        ref = at_repo_total(s_logits, t_logits, s_feats, t_feats, y, T, alpha, beta)
        assert torch.allclose(ours, ref, **TOL), (ours - ref).abs().item()
        # and the gradient the student gets from it
        g_ours = torch.autograd.grad(ours, list(student.parameters()), retain_graph=True)
        g_ref = torch.autograd.grad(ref, list(student.parameters()), retain_graph=True)
        assert max((a - b).abs().max().item() for a, b in zip(g_ours, g_ref)) < 1e-10


@pytest.mark.parametrize("mode,kind", [("KD", "kd"), ("AT", "at"), ("KD+AT", "kd+at")])
def test_few_shot_loss_equals_the_few_shot_reference_in_every_mode(mode, kind):
    """The recipe's defaults are the reference's (alpha 0.9, T 4, beta 1000, KL mean over batch and classes)."""
    student, teacher, x, y = _wrn_pair(seed=3)
    s_logits, s_feats = student.forward_features(x)
    with torch.no_grad():
        t_logits, t_feats = teacher.forward_features(x)
    recipe_loss = _loss(kind=kind)
    assert (recipe_loss.alpha, recipe_loss.temperature, recipe_loss.at_weight, recipe_loss.kl_reduction) == \
        (0.9, 4.0, 1000.0, "mean")
    ours = kd_objective(recipe_loss, s_logits, y, t_logits, s_feats, t_feats)
    ref = few_shot_kt_loss(mode, y, s_logits, s_feats, t_logits, t_feats)
    assert torch.allclose(ours, ref, **TOL), (ours - ref).abs().item()


def test_few_shot_kl_is_the_textbook_kl_divided_by_the_classes_times_two():
    """Why the reference's 2 alpha T^2 exists: its KL is the batch mean divided by C, so with C = 10
    its KD term is 2 / C = 1/5 of Hinton's alpha T^2 KL_batchmean."""
    s, t, y = _logits(seed=4)
    mean_kd = kd_objective(_loss(kind="kd", alpha=1.0), s, y, t)
    hinton = kd_objective(_loss(kind="kd", alpha=1.0, kl_reduction="batchmean"), s, y, t)
    assert torch.allclose(mean_kd, hinton * 2 / 10, **TOL)


@pytest.mark.parametrize("n_images,m,base_epochs,base_steps", [
    (50_000, 10, 200, [60, 120, 160]), (50_000, 25, 200, [60, 120, 160]), (50_000, 75, 200, [60, 120, 160]),
    (50_000, 200, 200, [60, 120, 160]), (73_257, 100, 100, [30, 60, 80]), (73_257, 10, 100, [30, 60, 80]),
    (1352, 5, 30, [10, 20, 25]), (1352, 3, 4, [2]),
])
def test_scaled_schedule_truncates_like_the_few_shot_reference(n_images, m, base_epochs, base_steps):
    assert scaled_schedule(base_epochs, base_steps, n_images, 10, m) == \
        few_shot_schedule(n_images, 10, m, base_epochs, base_steps)


def test_learning_rate_of_every_epoch_follows_the_few_shot_references_scheduler():
    """MultiStepLR stepped with step(epoch=e) after epoch e decays one epoch later than step()."""
    epochs, milestones, lr, gamma = 12, [3, 7, 8], 0.1, 0.2
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr, momentum=0.9)
    sched = step_schedule(opt, milestones, gamma)
    for epoch in range(epochs):
        assert opt.param_groups[0]["lr"] == pytest.approx(few_shot_lr(epoch, lr, milestones, gamma), rel=1e-12), epoch
        opt.step()
        sched.step()


def test_with_other_than_three_layer_pairs_at_weight_is_the_at_repos_beta():
    """at_weight * sum over pairs, as szagoruyko's code for any number of groups; the few-shot reference's
    beta * 3 / n per pair is reproduced by at_weight = beta * 3 / n."""
    student, teacher, x, y = _wrn_pair(seed=5)
    s_logits, s_feats = student.forward_features(x)
    with torch.no_grad():
        t_logits, t_feats = teacher.forward_features(x)
    s_feats, t_feats = s_feats[1:], t_feats[1:]  # two pairs
    ours = kd_objective(_loss(kind="kd+at", kl_reduction="batchmean", at_weight=1000), s_logits, y, t_logits, s_feats, t_feats)
    assert torch.allclose(ours, at_repo_total(s_logits, t_logits, s_feats, t_feats, y, 4.0, 0.9, 1000.0), **TOL)
    ours = kd_objective(_loss(kind="kd+at", at_weight=1500), s_logits, y, t_logits, s_feats, t_feats)
    assert torch.allclose(ours, few_shot_kt_loss("KD+AT", y, s_logits, s_feats, t_logits, t_feats, beta=1000.0), **TOL)


def zskt_divergence(s_logits, t_logits, T):
    return _kl_terms(s_logits, t_logits, T).mean()


def test_zero_shot_losses_equal_the_zskt_reference_at_any_temperature():
    """ZSKT's KL carries the temperature inside the softmaxes only: no T^2 (unlike KD). Our game casts
    to float32, so the comparison is in float32."""
    student, teacher, x, _ = _wrn_pair(seed=6)
    s_logits, s_feats = student.float().forward_features(x.float())
    with torch.no_grad():
        t_logits, t_feats = teacher.float().forward_features(x.float())
    for T in (1.0, 3.0, 20.0):
        ref_div = zskt_divergence(s_logits.double(), t_logits.double(), T)
        ref_student = ref_div + sum(250.0 * at_repo_at_loss(s.double(), t.double()) for s, t in zip(s_feats, t_feats))
        ours = student_loss(s_logits, s_feats, t_logits, t_feats, beta=250.0, temperature=T)
        assert torch.allclose(ours.double(), ref_student, rtol=1e-5, atol=1e-8), (T, (ours.double() - ref_student).abs().item())
        gen = generator_loss(s_logits, t_logits, temperature=T)
        assert torch.allclose(gen.double(), -ref_div, rtol=1e-5, atol=1e-9), (T, (gen.double() + ref_div).abs().item())
