"""FDS: forward-mode hypergradients with sharing (Micaelli & Storkey 2021) on digits."""

import json
import weakref

import pytest
import torch
from helpers_runs import assert_curves
from toolbox_fds.flatnet import FlatNet
from toolbox_fds.forward_mode import Hypers, batches, hypergradient, unroll, validation_gradient
from toolbox_fds.outer import SignSteps

from toolbox import data
from toolbox.registry import current


def _setup(dtype, steps_epochs=2, hidden=32):
    digits = data.load("digits")
    x, y = digits.normalize(digits.train_x).to(dtype), digits.train_y
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    val, train = perm[:300], perm[300:]
    arch = current().architecture("mlp")
    net = FlatNet(lambda: arch(num_classes=10, in_channels=1, image_size=8, hidden=hidden, depth=1).to(dtype))
    w0 = net.fresh_init(torch.Generator().manual_seed(1), dtype=dtype)
    idx = [train[b] for b in batches(len(train), 64, steps_epochs, torch.Generator().manual_seed(2))]
    return net, w0, x, y, val, idx


def test_forward_mode_hypergradient_matches_central_differences():
    net, w0, x, y, val, idx = _setup(torch.float64)
    # every kind of hyperparameter non-zero, so each tangent term (windows, momentum, decay) is exercised
    hypers = Hypers([0.3, 0.2, 0.1], momentum=0.5, weight_decay=1e-3)
    unrolled = unroll(net, w0, hypers, x, y, idx, grad_clamp=3.0, hz_clamp=None)
    forward = hypergradient(net, unrolled, x[val], y[val], batch_size=100)

    def val_loss(values):
        u = unroll(net, w0, Hypers.from_vector(values), x, y, idx, grad_clamp=3.0, hz_clamp=None, tangents=False)
        return validation_gradient(net, u.w, x[val], y[val], 100)[1].item()

    base = hypers.as_vector()
    central = []
    for j, value in enumerate(base):
        eps = 1e-5 * max(abs(value), 1e-2)
        up, down = list(base), list(base)
        up[j] += eps
        down[j] -= eps
        central.append((val_loss(up) - val_loss(down)) / (2 * eps))
    central = torch.tensor(central, dtype=torch.float64)
    assert (central.abs() > 1e-3).all()  # a real signal in every coordinate, not 0 == 0
    assert ((forward - central).norm() / central.norm()).item() < 1e-3  # measured ~5e-11
    assert ((forward - central).abs() / central.abs()).max().item() < 1e-3


def test_tangent_state_and_live_autograd_memory_do_not_grow_with_the_horizon():
    """Forward mode keeps w, v, Z, C (O(P*K)); nothing from earlier steps may stay alive in autograd."""
    net, w0, x, y, _, idx = _setup(torch.float32, steps_epochs=4, hidden=16)
    hypers = Hypers([0.1] * 7, momentum=0.5, weight_decay=1e-4)

    def run(steps):
        live, peak = [], [0]

        def pack(t):
            live[:] = [r for r in live if r() is not None]
            live.append(weakref.ref(t))
            peak[0] = max(peak[0], len(live))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = unroll(net, w0, hypers, x, y, idx[:steps], grad_clamp=3.0, hz_clamp=1.0)
        return out, peak[0]

    short, short_peak = run(5)
    long, long_peak = run(len(idx))
    assert len(idx) >= 60
    P = net.num_params
    assert short.numel() == long.numel() == P * (2 + 2 * 9)
    assert long.Z.shape == (P, 9) and long.w.grad_fn is None and long.Z.grad_fn is None
    assert long_peak == short_peak  # tensors saved for backward at the busiest moment: the same for 5 or 60+ steps


def test_sign_steps_halve_on_flips_and_stop_when_small():
    s = SignSteps.start([0.0, 0.0], [0.1, 0.1], decay=0.5)
    assert not s.update([-1.0, -2.0], 0.05)  # negative hypergradient: increase
    assert s.values == pytest.approx([0.1, 0.1])
    s.update([1.0, -1.0], 0.05)  # the first flips: its step halves before it is taken
    assert s.steps == pytest.approx([0.05, 0.1]) and s.values == pytest.approx([0.05, 0.2])
    s = SignSteps.start([1.0, 2.0], [0.04, 0.09], decay=0.5)
    assert s.update([1.0, 1.0], 0.05)  # 0.04 / 1 and 0.09 / 2 both below 5 %


def _run(tmp_path, name, overrides, resume=None):
    from toolbox.runs import execute

    return execute("train", "fds", "fds/digits", overrides=overrides, out=tmp_path / name, device="cpu",
                   resume=resume)


@pytest.mark.slow
def test_learns_a_schedule_from_zero_learning_rates_to_95_percent(tmp_path):
    run_dir, metrics = _run(tmp_path, "fds", [])
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    outer = [line for line in lines if "lr_0" in line]
    assert 1 <= len(outer) <= 8
    assert all(outer[0][f"lr_{k}"] == 0 for k in range(7)) and outer[0]["test_accuracy"] < 0.2  # untrained start
    assert metrics["accuracy"] >= 0.95  # retrained from scratch with the learned schedule; measured 0.9865
    schedule = json.loads((run_dir / "schedule.json").read_text())
    assert schedule["format"] == "toolbox-fds-schedule" and len(schedule["learning_rates"]) == 7
    assert min(schedule["learning_rates"]) > 0.05
    assert len(schedule["history"]) == len(outer) and (run_dir / "images" / "schedule.png").stat().st_size > 1000
    assert_curves(run_dir, "lr_0", "test_accuracy", "retrain_test_accuracy")
    # the validation split is carved from the train split, seeded, and written down
    split = json.loads((run_dir / "val_split.json").read_text())
    n_train = len(data.load("digits").train_y)
    assert len(split["val_indices"]) == round(0.2 * n_train) and max(split["val_indices"]) < n_train
    info = json.loads((run_dir / "run.json").read_text())
    assert info["records"]["val_split"]["val"] == len(split["val_indices"])
    # evaluate reads the saved model back: the same accuracy, with the schedule it was trained with
    from click.testing import CliRunner

    from toolbox.cli import cli

    result = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["metrics"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert report["schedule"]["learning_rates"] == pytest.approx(schedule["learning_rates"])


def test_resumed_run_learns_the_same_schedule(tmp_path, monkeypatch):
    import toolbox_fds.method as method

    from toolbox.errors import RunError

    short = ["outer_steps=4", "inner_epochs=2"]
    _, straight = _run(tmp_path, "straight", short)
    real_unroll, calls = method.unroll, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # during the third outer step, after two checkpoints
            raise KeyboardInterrupt
        return real_unroll(*args, **kwargs)

    monkeypatch.setattr(method, "unroll", interrupted)
    with pytest.raises(RunError, match="--resume"):
        _run(tmp_path, "cut", short)
    monkeypatch.setattr(method, "unroll", real_unroll)
    _, resumed = _run(tmp_path, "cut", short, resume=tmp_path / "cut")
    assert resumed == straight
    a, b = (json.loads((tmp_path / n / "schedule.json").read_text()) for n in ("straight", "cut"))
    assert a["learning_rates"] == b["learning_rates"] and a["history"] == b["history"]
    assert [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_supervised_recipes_can_train_with_a_learned_schedule_file(tmp_path):
    """schedule.kind=file: the k-th learning rate of schedule.json holds for the k-th quarter of training."""
    from toolbox_fds.schedule import write_schedule

    from toolbox.runs import execute

    (tmp_path / "fds-run").mkdir()
    write_schedule(tmp_path / "fds-run" / "schedule.json", [0.2, 0.1, 0.05, 0.01], momentum=0.9, weight_decay=0.0)
    run_dir, metrics = execute("train", "supervised", "supervised/digits", out=tmp_path / "sup", device="cpu", overrides=[
        "model.arch=mlp", "epochs=4", "schedule.kind=file", f"schedule.file={tmp_path / 'fds-run'}"])
    # 4 epochs x 22 steps: each epoch is one window; the logged lr is the one for the next step
    lrs = [json.loads(line)["lr"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.1, 0.05, 0.01, 0.01])
    assert metrics["accuracy"] > 0.9
