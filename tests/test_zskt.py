"""ZSKT building blocks on tiny networks: losses, generator, the game's structure and its equality with
the reference loop, the teacher/student pairing checks, and batched transition curves."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from toolbox_zskt.game import Game, generator_loss, student_loss
from toolbox_zskt.generator import Generator
from toolbox_zskt.networks import check_pair

from toolbox.errors import UsageError
from toolbox.models.wrn import WideResNet
from toolbox.teachers import freeze
from toolbox.transition import agreeing_indices, mean_transition_error, transition_curves

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")


def _benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "zskt_step.py"
    spec = importlib.util.spec_from_file_location("zskt_step", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- losses ------------------------------------------------------------------------------------


def test_kl_is_mean_over_batch_and_classes_at_temperature_one():
    torch.manual_seed(0)
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    p_t, p_s = t.softmax(1), s.softmax(1)
    by_hand = sum(p_t[i, j] * (math.log(p_t[i, j]) - math.log(p_s[i, j])) for i in range(4) for j in range(10)) / 40
    assert generator_loss(s, t).item() == pytest.approx(-by_hand.item(), rel=1e-5)
    no_at = student_loss(s, [], t, [], beta=250.0)
    assert no_at.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_attention_term_is_beta_times_mean_squared_difference_of_normalised_maps_per_group():
    torch.manual_seed(1)
    logits = torch.zeros(2, 10)  # identical logits: the KL term vanishes
    s_feats = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)]
    t_feats = [torch.randn(2, 6, 4, 4), torch.randn(2, 7, 2, 2)]
    expected = 0.0
    for s, t in zip(s_feats, t_feats):
        for i in range(2):
            a_s = [float((s[i, :, y, x] ** 2).mean()) for y in range(s.shape[2]) for x in range(s.shape[3])]
            a_t = [float((t[i, :, y, x] ** 2).mean()) for y in range(t.shape[2]) for x in range(t.shape[3])]
            ns, nt = math.sqrt(sum(v * v for v in a_s)), math.sqrt(sum(v * v for v in a_t))
            expected += sum((u / ns - v / nt) ** 2 for u, v in zip(a_s, a_t)) / (2 * len(a_s))
    got = student_loss(logits, s_feats, logits, t_feats, beta=250.0)
    assert got.item() == pytest.approx(250.0 * expected, rel=1e-5)


# --- generator ---------------------------------------------------------------------------------


def test_generator_matches_the_paper_at_32x32_and_shrinks_for_digits():
    g = Generator(100, out_channels=3, image_size=32)
    assert sum(p.numel() for p in g.parameters()) == 1_051_145  # the paper's 1.05 M
    assert g(torch.randn(5, 100)).shape == (5, 3, 32, 32)
    digits = Generator(100, out_channels=1, image_size=8)
    x = digits(torch.randn(6, 100))
    assert x.shape == (6, 1, 8, 8)
    # the final BN puts images in normalised space: per-channel batch mean 0, std 1 (no tanh)
    assert x.mean().abs().item() < 1e-5 and x.std().item() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="multiple of 4"):
        Generator(100, 1, 10)


# --- the game ----------------------------------------------------------------------------------


def _tiny(seed=0):
    torch.manual_seed(seed)
    teacher = WideResNet(10, 2, in_channels=1, image_size=8)
    student = WideResNet(10, 1, in_channels=1, image_size=8)
    generator = Generator(16, out_channels=1, image_size=8)
    return generator, student, teacher


def _optimisers(generator, student):
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3)
    opt_s = torch.optim.Adam(student.parameters(), lr=2e-3)
    return (opt_g, opt_s, torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, 10),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt_s, 10))


def test_one_z_one_generator_update_then_ten_student_steps_on_the_same_detached_x():
    generator, student, teacher = _tiny()
    freeze(teacher)
    calls = {"generator": [], "student": [], "teacher": []}
    generator.register_forward_hook(lambda m, i, o: calls["generator"].append((i[0], torch.is_grad_enabled(), o)))
    teacher.conv1.register_forward_pre_hook(lambda m, i: calls["teacher"].append(i[0]))
    g_before = [p.detach().clone() for p in generator.parameters()]
    t_before = [p.detach().clone() for p in teacher.parameters()]
    # forward_features bypasses nn.Module.__call__ of the student: count through its first conv instead
    student.conv1.register_forward_pre_hook(lambda m, i: calls["student"].append(i[0]))
    z = torch.randn(8, 16)
    game = Game(generator, student, teacher, *_optimisers(generator, student))
    out = game.step(z)

    (z1, grad1, x_g), (z2, grad2, x_s) = calls["generator"]
    assert z1 is z and z2 is z  # the same z for the generator step and the student steps
    assert grad1 and not grad2  # x for the student steps is generated once, without autograd
    assert len(calls["student"]) == 11 and len(calls["teacher"]) == 2  # teacher: once per phase
    assert calls["student"][0] is x_g and x_g.requires_grad
    assert all(x is x_s for x in calls["student"][1:]) and not x_s.requires_grad
    assert out["images"] is x_s
    # x_s comes from the updated generator
    assert any(not torch.equal(a, b) for a, b in zip(g_before, generator.parameters()))
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(t_before, teacher.parameters()))
    assert all(p.requires_grad for p in student.parameters())
    assert game.sched_student.last_epoch == 1 and game.sched_generator.last_epoch == 1


def test_game_equals_the_reference_loop():
    bench = _benchmark()
    ref = _tiny()
    ours = _tiny()
    ref_opt, ours_opt = _optimisers(ref[0], ref[1]), _optimisers(ours[0], ours[1])
    ref[2].eval()  # the reference keeps the teacher trainable, in eval mode
    freeze(ours[2])
    game = Game(*ours, *ours_opt)
    for seed in range(2):
        z = torch.randn(8, 16, generator=torch.Generator().manual_seed(seed))
        bench.reference_step(*ref, *ref_opt, z)
        game.step(z)
    for a, b in zip(ref[1].state_dict().values(), ours[1].state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    # generator weights match too; only its BN running averages differ (the reference updates them on
    # 11 forward passes per iteration, we on 2), and the generator never runs in eval mode
    for a, b in zip(ref[0].parameters(), ours[0].parameters()):
        assert torch.allclose(a, b, atol=1e-6)


# --- pairing checks -----------------------------------------------------------------------------


def test_student_must_not_be_the_teacher():
    _, _, teacher = _tiny()
    with pytest.raises(UsageError, match="student is the teacher"):
        check_pair(teacher, teacher, (1, 8, 8))


def test_class_counts_must_match():
    _, _, teacher = _tiny()
    with pytest.raises(UsageError, match="predicts 10 classes but student .* 5"):
        check_pair(teacher, WideResNet(10, 1, num_classes=5, in_channels=1, image_size=8), (1, 8, 8))


def test_networks_need_group_outputs():
    _, _, teacher = _tiny()
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(UsageError, match="student architecture 'mlp' exposes no group outputs"):
        check_pair(teacher, mlp, (1, 8, 8), "wrn-10-2", "mlp")


def test_check_leaves_bn_statistics_alone():
    generator, student, teacher = _tiny()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    student.train()
    check_pair(teacher, student, (1, 8, 8))
    assert student.training
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())


# --- transition curves --------------------------------------------------------------------------


def test_batched_transition_curves_equal_the_per_image_per_target_loop():
    _, student, teacher = _tiny()
    student.eval()
    teacher.eval()
    xs = torch.randn(3, 1, 8, 8)
    classes = student(xs).argmax(1)  # the walk itself does not need agreement
    p_s, p_t = transition_curves(student, teacher, xs, classes, 10, steps=6, lr=1.0, batch_size=4)
    assert p_s.shape == p_t.shape == (len(xs), 9, 6)
    for i in range(len(xs)):
        for k in range(9):
            target = (classes[i] + k + 1) % 10
            xa = xs[i:i + 1].clone().requires_grad_(True)
            for step in range(6):
                logits_s = student(xa)
                logits_t = teacher(xa).detach()
                loss = F.cross_entropy(logits_s, target.view(1))
                (grad,) = torch.autograd.grad(loss, xa)
                assert p_s[i, k, step].item() == pytest.approx(logits_s.softmax(1)[0, target].item(), abs=1e-5)
                assert p_t[i, k, step].item() == pytest.approx(logits_t.softmax(1)[0, target].item(), abs=1e-5)
                xa = (xa - grad).detach().requires_grad_(True)
    mte = mean_transition_error(p_s, p_t, steps=4)
    assert mte == pytest.approx((p_t[..., :4] - p_s[..., :4]).abs().mean().item())


def test_a_network_matches_its_own_beliefs():
    _, student, _ = _tiny()
    student.eval()
    x = torch.randn(4, 1, 8, 8)
    classes = student(x).argmax(1)
    p_a, p_b = transition_curves(student, student, x, classes, 10, steps=5)
    assert mean_transition_error(p_a, p_b) == 0.0
    # walking down the cross-entropy of class j raises p_j
    assert (p_a[..., -1] > p_a[..., 0]).float().mean().item() > 0.9


def test_agreeing_indices_keep_test_order_and_the_limit():
    _, student, teacher = _tiny()
    student.eval()
    teacher.eval()
    x = torch.randn(40, 1, 8, 8)
    agree = torch.nonzero(student(x).argmax(1) == teacher(x).argmax(1)).flatten()
    idx, classes = agreeing_indices(student, teacher, x, limit=5, batch_size=7)
    assert torch.equal(idx, agree[:5])
    assert torch.equal(classes, teacher(x[idx]).argmax(1))


# --- collapse detection -------------------------------------------------------------------------


class _Constant(torch.nn.Module):
    """Predicts class ``cls`` for every image."""

    def __init__(self, cls):
        super().__init__()
        self.cls = cls
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        logits = torch.zeros(len(x), 10)
        logits[:, self.cls] = 1.0
        return logits


def test_a_student_that_predicts_one_class_is_reported_as_collapsed():
    from toolbox_zskt.method import prediction_health

    x, y = torch.randn(50, 1, 8, 8), torch.arange(50) % 10
    health = prediction_health(_Constant(3), x, y, _Constant(3), 10, torch.device("cpu"))
    assert health["collapsed"] and health["dominant_class_fraction"] == 1.0
    assert health["accuracy"] == pytest.approx(0.1) and health["agreement"] == 1.0
    assert "collapsed" in health["warning"] and "100%" in health["warning"]


def test_scaled_game_unscales_before_clipping_so_a_power_of_two_scale_changes_no_weight():
    """The fp16 path (toolbox.speed: a gradient scaler per network) run in fp32 on the CPU: scaling a loss
    by 2^k and unscaling the gradients is exact, so the weights must equal the unscaled game's bit for bit;
    clipping the still-scaled gradients (grad_clip 5 at a scale of 2^12) would shrink every update."""
    results = []
    for scaled in (False, True):
        generator, student, teacher = _tiny()
        freeze(teacher)
        scalers = {}
        if scaled:
            scalers = {k: torch.amp.GradScaler("cpu", init_scale=2.0 ** 12) for k in ("scaler_generator", "scaler_student")}
        game = Game(generator, student, teacher, *_optimisers(generator, student), student_steps=3, **scalers)
        for z in torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(3)):
            game.step(z)
        results.append([p.detach().clone() for p in (*generator.parameters(), *student.parameters())])
        assert set(game.stateful()) >= {"generator", "student", "opt_generator", "opt_student"}
        assert ("scaler_student" in game.stateful()) == scaled
    assert all(torch.equal(a, b) for a, b in zip(*results))
