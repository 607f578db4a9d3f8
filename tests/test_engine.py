"""The training engine (toolbox.engine): schedules equal to the former hand-written ones at every step,
no host read inside the step loop beyond the logging interval, gradient accumulation equal to one large
batch, clipping, bf16 on the CPU, and Run.restore loading every state before restoring the RNGs."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from toolbox import engine
from toolbox.errors import NonFiniteLoss, RunError, UsageError
from toolbox.runs import Run
from toolbox.speed import Speed


def make_run(tmp_path, name="run", resumed=False):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    if not (d / "run.json").exists():
        (d / "run.json").write_text("{}")
    return Run(d, SimpleNamespace(seed=0), "test", "train", torch.device("cpu"), resumed=resumed)


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def data(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def ce(model, x, y):
    return F.cross_entropy(model(x), y)


# --- schedules ---------------------------------------------------------------------------------


def lrs(sched, opt, steps):
    out = [sched.get_last_lr()[0]]
    for _ in range(steps):
        opt.step()
        sched.step()
        out.append(sched.get_last_lr()[0])
    return out


def sgd(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


@pytest.mark.parametrize("kind", ["cosine", "step", "constant", "file"])
def test_schedules_give_the_former_lambda_rates_bit_for_bit_at_every_step(kind, tmp_path):
    """The rates of the hand-written LambdaLRs that toolbox.classifier used before the engine."""
    per_epoch, epochs, gamma, milestones = 23, 7, 0.2, [2, 5]
    total = per_epoch * epochs
    table = [0.3, 0.07, 0.03, 0.013]
    (tmp_path / "schedule.json").write_text(json.dumps({"learning_rates": table}))
    formula = {
        "cosine": lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)),
        "step": lambda step: gamma ** sum(step >= m * per_epoch for m in milestones),
        "constant": lambda step: 1.0,
        "file": lambda step: table[min(len(table) * step // total, len(table) - 1)] / 0.1,
    }[kind]
    opt = sgd()
    former = lrs(torch.optim.lr_scheduler.LambdaLR(opt, formula), opt, total)
    opt = sgd()
    section = SimpleNamespace(kind=kind, milestones=milestones, gamma=gamma, file=str(tmp_path))
    ours = lrs(engine.make_scheduler(opt, section, total, per_epoch), opt, total)
    assert ours == former  # exact float equality, every step
    assert len(set(ours)) > (1 if kind != "constant" else 0)


def test_cosine_is_torchs_cosine_annealing_without_its_rounding_drift():
    total = 200
    opt = sgd()
    ours = lrs(engine.make_scheduler(opt, "cosine", total, 10), opt, total)
    opt = sgd()
    recursive = lrs(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total), opt, total)
    assert isinstance(engine.make_scheduler(sgd(), "cosine", total, 10), torch.optim.lr_scheduler.CosineAnnealingLR)
    assert ours == pytest.approx(recursive, rel=1e-9, abs=1e-15)
    assert ours != recursive  # torch's recursive update drifts in the last bits; the closed form does not


def test_a_restored_scheduler_continues_with_the_same_rates():
    total = 50
    opt = sgd()
    straight = engine.make_scheduler(opt, "cosine", total, 10)
    expected = lrs(straight, opt, total)
    opt = sgd()
    first = engine.make_scheduler(opt, "cosine", total, 10)
    head = lrs(first, opt, 20)
    opt2 = sgd()
    second = engine.make_scheduler(opt2, "cosine", total, 10)
    second.load_state_dict(first.state_dict())
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]  # as optimizer.load_state_dict does
    assert head + lrs(second, opt2, total - 20)[1:] == expected


# --- the step loop -----------------------------------------------------------------------------


class Counter:
    """Counts the host reads of tensors: .item(), .tolist(), .cpu()."""

    def __init__(self, monkeypatch):
        self.calls = 0
        for name in ("item", "tolist", "cpu"):
            original = getattr(torch.Tensor, name)

            def counted(t, *a, _original=original, **k):
                self.calls += 1
                return _original(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counted)


def test_no_host_read_inside_the_steps_beyond_the_logging_interval(tmp_path, monkeypatch):
    steps, epochs, log_every = 40, 2, 10
    x, y = data(16 * steps)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = engine.Engine(make_run(tmp_path), model, opt, engine.make_scheduler(opt, "cosine", steps * epochs, steps),
                            loop=engine.Loop(log_every=log_every))
    batches = engine.TensorBatches(x, y, 16, torch.Generator().manual_seed(0), torch.device("cpu"))
    counter = Counter(monkeypatch)
    metrics = trainer.fit(batches, epochs, loss=ce)
    assert 0 < counter.calls <= epochs * math.ceil(steps / log_every)
    assert metrics["train_loss"] > 0 and len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == epochs

    # the counter does see a read per step: the former loop's loss.item()
    counter.calls = 0
    for xb, yb in batches.epoch(0):
        loss = ce(model, xb, yb)
        loss.item()
    assert counter.calls == steps


def test_kd_reads_the_host_no_more_often_than_the_logging_interval(tmp_path, monkeypatch):
    """KD's loss (teacher pass, feature taps, attention transfer, augmentation) adds no host read per step."""
    from toolbox_kd.features import FeatureTap
    from toolbox_kd.method import kd_step_loss
    from toolbox_kd.recipe import KDRecipe

    from toolbox.models import build_for
    from toolbox.recipes import apply_overrides

    recipe = KDRecipe.model_validate(apply_overrides({"method": "kd"}, ["data.augment=crop_flip", "data.crop_padding=1"]))
    spec = SimpleNamespace(shape=(1, 8, 8), num_classes=10)
    torch.manual_seed(0)
    student, teacher = build_for("wrn-16-1", spec), build_for("wrn-16-1", spec).eval().requires_grad_(False)
    taps = [FeatureTap(m, m.feature_layers, "wrn-16-1", role) for m, role in ((student, "student"), (teacher, "teacher"))]
    steps, epochs, log_every = 12, 2, 6
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    trainer = engine.Engine(make_run(tmp_path), student, opt, loop=engine.Loop(log_every=log_every))
    g = torch.Generator().manual_seed(0)
    batches = engine.TensorBatches(torch.randn(8 * steps, 1, 8, 8, generator=g), torch.randint(0, 10, (8 * steps,), generator=g),
                                   8, g, torch.device("cpu"))
    loss = kd_step_loss(recipe, trainer, teacher, *taps, torch.Generator().manual_seed(1))
    counter = Counter(monkeypatch)
    metrics = trainer.fit(batches, epochs, loss=loss)
    assert 0 < counter.calls <= epochs * math.ceil(steps / log_every)
    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0


def test_a_non_finite_loss_is_caught_at_the_step_that_produced_it(tmp_path):
    x, y = data(16 * 12)
    model = mlp()
    seen = []

    def exploding(model, xb, yb):
        seen.append(1)
        loss = ce(model, xb, yb)
        return loss * float("nan") if len(seen) == 8 else loss

    trainer = engine.Engine(make_run(tmp_path), model, torch.optim.SGD(model.parameters(), lr=0.01),
                            loop=engine.Loop(log_every=5))
    with pytest.raises(NonFiniteLoss, match="loss became nan at step 7; no checkpoint"):
        trainer.fit(engine.TensorBatches(x, y, 16, torch.Generator(), torch.device("cpu")), 2, loss=exploding)
    assert len(seen) == 10  # read at the end of the second window of 5, not after every step


def test_an_engine_without_a_run_trains_the_same_weights_and_keeps_nothing(tmp_path):
    """The condensation evaluator's helper models: no run directory, the same training."""
    x, y = data(16 * 6)
    trained = []
    for run in (make_run(tmp_path), None):
        model = mlp()
        opt = engine.make_optimizer(model.parameters(), SimpleNamespace(lr=0.1, momentum=0.9, weight_decay=5e-4))
        trainer = engine.Engine(run, model, opt, device=torch.device("cpu"), loop=engine.Loop(log_every=4))
        batches = engine.TensorBatches(x, y, 16, torch.Generator().manual_seed(3), torch.device("cpu"))
        metrics = trainer.fit(batches, 3, loss=ce)
        trained.append((model, metrics["train_loss"]))
    (with_run, loss_run), (without, loss_without) = trained
    assert loss_run == loss_without
    assert all(torch.equal(a, b) for a, b in zip(with_run.parameters(), without.parameters()))
    # a helper model that diverges is reported by its caller (e.g. at chance accuracy), not an error
    model = mlp()
    nan = engine.Engine(None, model, torch.optim.SGD(model.parameters(), lr=0.1), device=torch.device("cpu"))
    assert math.isnan(nan.fit(batches, 1, loss=lambda m, xb, yb: ce(m, xb, yb) * float("nan"))["train_loss"])
    with pytest.raises(TypeError, match="device="):
        engine.Engine(None, mlp(), opt)


def train(tmp_path, name, batch, accumulate, n, epochs=2, **loop):
    x, y = data(n)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    per_epoch = engine.optimizer_steps(math.ceil(n / batch), accumulate)
    sched = engine.make_scheduler(opt, "cosine", per_epoch * epochs, per_epoch)
    trainer = engine.Engine(make_run(tmp_path, name), model, opt, sched, loop=engine.Loop(accumulate=accumulate, **loop))
    batches = engine.TensorBatches(x, y, batch, torch.Generator().manual_seed(3), torch.device("cpu"))
    trainer.fit(batches, epochs, loss=ce)
    return model, sched


def test_accumulating_k_micro_batches_equals_one_step_on_their_concatenation(tmp_path):
    """n = 136: 17 micro-batches of 8 per epoch, the last group holding one (a short batch of 8 either way)."""
    small, s1 = train(tmp_path, "accumulated", batch=8, accumulate=4, n=136)
    large, s2 = train(tmp_path, "large", batch=32, accumulate=1, n=136)
    assert s1.last_epoch == s2.last_epoch == 10
    for a, b in zip(small.parameters(), large.parameters()):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    plain, _ = train(tmp_path, "plain", batch=8, accumulate=1, n=136)
    assert not torch.allclose(next(plain.parameters()), next(small.parameters()), atol=1e-4)


def test_clipping_caps_the_global_gradient_norm_of_the_update(tmp_path):
    x, y = data(32)
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    F.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    model.zero_grad(set_to_none=True)
    clip = 0.01
    assert norm > 10 * clip
    trainer = engine.Engine(make_run(tmp_path), model, torch.optim.SGD(model.parameters(), lr=1.0),
                            loop=engine.Loop(clip_norm=clip))
    trainer.fit(engine.TensorBatches(x, y, 32, torch.Generator(), torch.device("cpu")), 1, loss=ce)
    for p, p0, g in zip(model.parameters(), before, grads):
        assert torch.allclose(p0 - p, g * clip / norm, atol=1e-7)


def test_bf16_runs_the_forward_pass_in_bf16_on_the_cpu(tmp_path):
    x, y = data(32)
    model, dtypes = mlp(), []

    def loss(model, xb, yb):
        logits = model(xb)
        dtypes.append(logits.dtype)
        return F.cross_entropy(logits, yb)

    trainer = engine.Engine(make_run(tmp_path), model, torch.optim.SGD(model.parameters(), lr=0.1),
                            speed=Speed(amp="bf16"))
    trainer.fit(engine.TensorBatches(x, y, 16, torch.Generator(), torch.device("cpu")), 1, loss=loss)
    assert dtypes == [torch.bfloat16] * 2 and all(p.dtype == torch.float32 for p in model.parameters())
    assert json.loads((tmp_path / "run" / "run.json").read_text())["records"]["speed"]["amp"] == "bf16"


def test_a_whole_step_cannot_be_accumulated(tmp_path):
    model = mlp()
    trainer = engine.Engine(make_run(tmp_path), model, torch.optim.SGD(model.parameters(), lr=0.1),
                            loop=engine.Loop(accumulate=2))
    x, y = data(16)
    with pytest.raises(UsageError, match="loop.accumulate=2 needs the engine's own step"):
        trainer.fit(engine.TensorBatches(x, y, 8, torch.Generator(), torch.device("cpu")), 1, step=lambda e, x, y: 0)


def test_supervised_digits_in_bf16_reaches_95_percent_on_the_cpu(tmp_path):
    out = tmp_path / "bf16"
    result = CliRunner().invoke(__import__("toolbox.cli", fromlist=["cli"]).cli, [
        "train", "supervised", "--dataset", "digits", "--arch", "mlp", "-o", "epochs=5", "-o", "speed.amp=bf16",
        "--threads", "1", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["records"]["speed"] == \
        {"amp": "bf16", "channels_last": False, "compile": False}
    assert json.loads((out / "summary.json").read_text())["accuracy"] >= 0.95


# --- restore -----------------------------------------------------------------------------------


class Drawing(torch.nn.Linear):
    """A module whose load_state_dict draws from the global RNG (as lazy initialisation can)."""

    def load_state_dict(self, state, strict=True):
        torch.rand(3)
        return super().load_state_dict(state, strict)


def test_restore_loads_every_state_then_restores_the_generators_last(tmp_path):
    run = make_run(tmp_path)
    model, counters = Drawing(2, 2), {"seen": 5}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run.generator("data").manual_seed(11)
    torch.manual_seed(7)
    run.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "counters": counters}, 3)
    expected, expected_data = torch.rand(4), torch.rand(4, generator=run.generator("data"))
    (run.dir / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)))

    assert make_run(tmp_path).restore(model=model) == 0  # a fresh run: nothing loaded

    resumed = make_run(tmp_path, resumed=True)
    fresh, fresh_opt, fresh_counters = Drawing(2, 2), torch.optim.SGD(Drawing(2, 2).parameters(), lr=0.1), {}
    assert resumed.restore(model=fresh, optimizer=fresh_opt, counters=fresh_counters, scaler=None) == 3
    assert torch.equal(fresh.weight, model.weight) and fresh_counters == {"seen": 5}
    assert torch.equal(torch.rand(4), expected)  # the draw inside load_state_dict did not shift the stream
    assert torch.equal(torch.rand(4, generator=resumed.generator("data")), expected_data)
    assert [json.loads(s)["step"] for s in (run.dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    with pytest.raises(RunError, match="holds no 'scheduler'"):
        make_run(tmp_path, resumed=True).restore(scheduler=torch.optim.lr_scheduler.ConstantLR(fresh_opt))

    # the two-call form: load_checkpoint() restores the generators, restore(state, ...) loads the targets
    again = make_run(tmp_path, resumed=True)
    counted, loaded = {}, Drawing(2, 2)
    assert again.restore(again.load_checkpoint(), counters=counted, model=loaded) == 3
    assert counted == {"seen": 5} and torch.equal(loaded.weight, model.weight)


@pytest.mark.parametrize("args", [
    ["train", "sam", "-o", "data.label_noise=0.2", "-o", "loop.clip_norm=1.0"],
    ["train", "supervised", "--arch", "mlp", "-o", "loop.accumulate=3", "-o", "loop.log_every=4"],
    ["train", "supervised", "--arch", "mlp", "-o", "data.loader=stream", "-o", "data.workers=2"],
], ids=["sam-clipped", "supervised-accumulated", "supervised-streamed"])
def test_killed_engine_runs_resume_exactly(monkeypatch, tmp_path, args):
    """tests/test_resume.py's check (interrupted at checkpoint 3, resumed: same metrics, history, weights)."""
    from test_resume import assert_resume_is_exact

    from toolbox import plugins

    plugins.reset()
    try:
        assert_resume_is_exact(monkeypatch, tmp_path, [*args, "--epochs", "4", "--threads", "1", "--device", "cpu"],
                               epochs=4)
    finally:
        plugins.reset()
