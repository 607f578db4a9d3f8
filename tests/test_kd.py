"""KD plugin: the few-shot KD+AT effect on digits, the composed loss, shots, hooks, errors, resume."""

import json

import pytest
import toolbox_kd.method as kd_method
import torch
import torch.nn.functional as F
from helpers_runs import assert_curves
from toolbox_kd.features import FeatureTap
from toolbox_kd.method import kd_objective
from toolbox_kd.recipe import KDRecipe
from toolbox_kd.shots import sample_shots, scaled_schedule

from toolbox import runs
from toolbox.errors import UsageError
from toolbox.recipes import apply_overrides


def _accuracy(run_dir) -> float:
    return json.loads((run_dir / "summary.json").read_text())["accuracy"]


def test_few_shot_kdat_beats_the_same_images_without_a_teacher(digits_teacher, tmp_path):
    teacher = [f"teacher.source={digits_teacher}"]
    kdat, ce = [], []
    for seed in (0, 1):
        # a third of the recipe's schedule and two seeds keep the test short; the effect is already ~10 points
        # (docs/benchmarks/digits-kd.md has three seeds of every loss)
        common = [f"seed={seed}", "schedule.epochs=10"]
        kdat.append(_accuracy(runs.execute("distill", "kd", "kd/digits-kdat-m5", common + teacher,
                                           out=tmp_path / f"kdat{seed}", device="cpu")[0]))
        ce.append(_accuracy(runs.execute("distill", "kd", "kd/digits-ce-m5", common, out=tmp_path / f"ce{seed}",
                                         device="cpu")[0]))
        # both saw the same 50 images: the shots depend on the seed only
        shots = [json.loads((tmp_path / f"{name}{seed}" / "run.json").read_text())["records"]["shots"]["indices"]
                 for name in ("kdat", "ce")]
        assert shots[0] == shots[1] and len(shots[0]) == 50
    assert sum(kdat) / 2 >= sum(ce) / 2 + 0.03, (kdat, ce)
    assert min(kdat) > 0.85


def test_full_data_kd_is_at_least_as_good_as_cross_entropy(digits_teacher, tmp_path):
    common = ["schedule.epochs=8", "schedule.milestones=[4,6]"]
    kd = _accuracy(runs.execute("distill", "kd", "kd/digits", common + [f"teacher.source={digits_teacher}"],
                                out=tmp_path / "kd", device="cpu")[0])
    ce = _accuracy(runs.execute("distill", "kd", "kd/digits-ce", common, out=tmp_path / "ce", device="cpu")[0])
    assert kd >= ce - 0.01 and kd > 0.9, (kd, ce)


def _loss(**kw):
    return KDRecipe.model_validate(apply_overrides({"method": "kd"}, [f"loss.{k}={v}" for k, v in kw.items()])).loss


def test_composed_loss_matches_the_reference_formulas():
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 10), torch.randn(6, 10), torch.randint(0, 10, (6,))
    fs, ft = [torch.randn(6, 4, 8, 8)], [torch.randn(6, 8, 8, 8)]
    ce = F.cross_entropy(s, y)
    p_t = F.softmax(t / 4, 1)
    kl_mean = (p_t * (p_t.log() - F.log_softmax(s / 4, 1))).sum() / s.numel()
    a_s = F.normalize(fs[0].pow(2).mean(1).flatten(1), dim=1)
    a_t = F.normalize(ft[0].pow(2).mean(1).flatten(1), dim=1)
    at = (a_s - a_t).pow(2).mean()
    assert torch.allclose(kd_objective(_loss(kind="ce"), s, y, t), ce)
    assert torch.allclose(kd_objective(_loss(kind="kd"), s, y, t), 0.1 * ce + 2 * 0.9 * 16 * kl_mean, atol=1e-6)
    assert torch.allclose(kd_objective(_loss(kind="at", at_weight=7), s, y, t, fs, ft), ce + 7 * at, atol=1e-6)
    both = kd_objective(_loss(kind="kd+at", at_weight=1000), s, y, t, fs, ft)
    assert torch.allclose(both, 0.1 * ce + 28.8 * kl_mean + 1000 * at, atol=1e-5)
    batchmean = kd_objective(_loss(kind="kd", kl_reduction="batchmean"), s, y, t)
    assert torch.allclose(batchmean, 0.1 * ce + 0.9 * 16 * kl_mean * 10, atol=1e-5)


def test_shots_are_per_class_seeded_and_bounded():
    labels = torch.tensor([0] * 7 + [1] * 4 + [2] * 9)
    a = sample_shots(labels, 3, 3, torch.Generator().manual_seed(0))
    b = sample_shots(labels, 3, 3, torch.Generator().manual_seed(0))
    c = sample_shots(labels, 3, 3, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(labels[a]).tolist() == [3, 3, 3] and len(set(a.tolist())) == 9
    with pytest.raises(UsageError, match="more than class 1 has \\(4 training images\\); use at most 4"):
        sample_shots(labels, 5, 3, torch.Generator())
    assert scaled_schedule(200, [60, 120, 160], 50000, 10, 200) == (5000, [1500, 3000, 4000])
    assert scaled_schedule(30, [10], 1352, 10, 0) == (30, [10])


def test_feature_tap_takes_any_module_path_with_hooks():
    from toolbox.models.small import MLP

    model = MLP(num_classes=10, in_channels=1, image_size=8)
    tap = FeatureTap(model, ["body.1", "body.3"], "mlp", "student")
    x = torch.randn(5, 1, 8, 8)
    logits, feats = tap(model, x)
    h1 = model.body[1](model.body[0](x))
    assert torch.allclose(feats[0], h1) and torch.allclose(logits, model(x))
    assert [f.shape[1] for f in feats] == [256, 256]
    with pytest.raises(UsageError, match="student 'mlp' has no module 'body.9'.*valid module paths include: body"):
        FeatureTap(model, ["body.9"], "mlp", "student")


def test_bad_layers_and_sizes_are_one_line_errors(digits_teacher, tmp_path):
    base = [f"teacher.source={digits_teacher}", "schedule.epochs=1"]
    with pytest.raises(UsageError, match="teacher 'wrn-16-2' has no module 'group9'"):
        runs.execute("distill", "kd", "kd/digits-kdat-m5", base + ["loss.teacher_layers=[group1,group2,group9]"],
                     out=tmp_path / "a", device="cpu")
    with pytest.raises(UsageError, match="attention maps differ in size: student 'group1' gives \\(8, 8\\), teacher 'group2' \\(4, 4\\)"):
        runs.execute("distill", "kd", "kd/digits-kdat-m5", base + ["loss.teacher_layers=[group2,group2,group3]"],
                     out=tmp_path / "b", device="cpu")
    with pytest.raises(UsageError, match="--shots 500 is more than class"):
        runs.execute("distill", "kd", "kd/digits-kdat-m5", base + ["data.shots=500"], out=tmp_path / "c", device="cpu")


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(digits_teacher, tmp_path, monkeypatch):
    args = ["schedule.epochs=4", "schedule.milestones=[2]", "checkpoint_every=1", "data.shots=3", "eval_every=10",
            f"teacher.source={digits_teacher}"]
    whole, _ = runs.execute("distill", "kd", "kd/digits-kdat-m5", args, out=tmp_path / "whole", device="cpu")

    real_log = runs.Run.log

    def dying_log(self, step, **metrics):
        real_log(self, step, **metrics)
        if step == 30:  # of 180 (4 epochs scaled by 1352 / 30); the last checkpoint is epoch 29's
            raise KeyboardInterrupt

    monkeypatch.setattr(runs.Run, "log", dying_log)
    with pytest.raises(Exception, match="interrupted"):
        runs.execute("distill", "kd", "kd/digits-kdat-m5", args, out=tmp_path / "cut", device="cpu")
    monkeypatch.setattr(runs.Run, "log", real_log)
    resumed, metrics = runs.execute("distill", "kd", device="cpu", resume=tmp_path / "cut")
    assert metrics["accuracy"] == json.loads((whole / "summary.json").read_text())["accuracy"]
    assert (resumed / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()


def test_bf16_and_compiled_kd_runs_with_the_teacher_under_the_same_settings(digits_teacher, tmp_path, monkeypatch):
    """speed.amp=bf16 + speed.compile=true: student and frozen teacher (with its attention taps) both
    compiled and run under bf16 autocast. Traced with dynamo only (backend "eager"): inductor's CPU build
    takes minutes; the capture of the hooks and the teacher pass is what compile=true adds."""
    compiled, dtypes = [], []
    real_compile = torch.compile

    def traced_only(fn, **kwargs):
        compiled.append(fn)
        return real_compile(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", traced_only)
    torch._dynamo.reset()
    real_loss = kd_method.kd_step_loss

    def watched(recipe, trainer, teacher, *rest):
        teacher.fc.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
        return real_loss(recipe, trainer, teacher, *rest)

    monkeypatch.setattr(kd_method, "kd_step_loss", watched)
    args = [f"teacher.source={digits_teacher}", "schedule.epochs=1", "data.shots=2", "schedule.scale_with_shots=false",
            "speed.amp=bf16", "speed.compile=true"]
    out, metrics = runs.execute("distill", "kd", "kd/digits-kdat-m5", args, out=tmp_path / "run", device="cpu")
    assert len(compiled) == 2  # the student (the engine's forward) and the teacher
    # one training step (20 images, one batch) under bf16 autocast, then the final test predictions in fp32
    assert dtypes[0] == torch.bfloat16 and dtypes[-1] == torch.float32 and dtypes.count(torch.bfloat16) == 1
    assert json.loads((out / "run.json").read_text())["records"]["speed"] == {"amp": "bf16", "channels_last": False,
                                                                               "compile": True}
    assert 0 <= metrics["accuracy"] <= 1 and metrics["loss"] == metrics["loss"]
    assert_curves(out, "train_loss")
