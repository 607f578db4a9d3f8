"""ZSKT end to end on digits, through the core API: the zero-shot effect without touching a training
image, exact resume, one-line errors for bad input, and the evaluate hook (accuracy, transition curves)."""

import json
import re

import pytest
import torch
from click.testing import CliRunner
from helpers_runs import assert_curves
from toolbox_zskt.game import Game

import toolbox.data
from toolbox import artifacts, plugins, runs
from toolbox.errors import RunError

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")


class _TestSplitOnly:
    """A dataset whose training split cannot be read: any access is recorded and fails."""

    def __init__(self, real, touched):
        self._real, self._touched = real, touched

    def __getattr__(self, name):
        if name in ("train_x", "train_y"):
            self._touched.append(name)
            raise AssertionError(f"ZSKT read the real training split ({name})")
        return getattr(self._real, name)


@pytest.fixture(scope="module")
def zero_shot_run(digits_teacher, tmp_path_factory):
    """A short digits run (seed 0) whose dataset refuses to hand out its training split."""
    real_load = toolbox.data.load
    touched = []
    mp = pytest.MonkeyPatch()
    mp.setattr(toolbox.data, "load", lambda name: _TestSplitOnly(real_load(name), touched))
    try:
        out = tmp_path_factory.mktemp("zskt") / "run"
        run_dir, metrics = runs.execute(
            "train", "zskt", "zskt/digits",
            [f"teacher.source={digits_teacher}", "student.arch=wrn-10-1", "iterations=150", "batch_size=48"],
            out=out, device="cpu")
    finally:
        mp.undo()
    return run_dir, metrics, touched


@pytest.mark.slow
def test_student_learns_digits_without_a_training_image(zero_shot_run, digits_teacher):
    run_dir, metrics, touched = zero_shot_run
    assert touched == []
    assert metrics["teacher_accuracy"] >= 0.97
    assert metrics["accuracy"] >= 0.70  # chance is 0.10
    assert metrics["agreement"] >= 0.70
    assert not metrics["collapsed"] and metrics["dominant_class_fraction"] < 0.3
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "accuracy" in x] == list(range(1, 151))  # every 1% of 150 iterations
    assert lines[-1]["accuracy"] == pytest.approx(metrics["accuracy"])  # the final iterate, no best pick
    assert (run_dir / "images" / "samples.png").is_file() and (run_dir / "images" / "samples-0000015.png").is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["teacher"]["path"] == str(digits_teacher) and config["zskt"]["real_training_images_seen"] == 0
    records = json.loads((run_dir / "run.json").read_text())["records"]
    assert records["speed"] == {"channels_last": False, "amp": "fp32", "compile": False}
    assert_curves(run_dir, "accuracy")


def test_evaluate_accuracy_agreement_and_transition_curves(zero_shot_run, tmp_path):
    run_dir, metrics, _ = zero_shot_run
    pm = plugins.load()
    method = pm.registry.method("zskt", "evaluate")
    source = artifacts.resolve_source(run_dir)
    plain = pm.call("evaluate", method, source=source, options={"metric": None}, device=torch.device("cpu"), out=tmp_path)
    assert plain["metrics"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert plain["metrics"]["agreement"] == pytest.approx(metrics["agreement"])
    curves = pm.call("evaluate", method, source=source, options={"metric": "transition-curves", "images": "20", "steps": "12"},
                     device=torch.device("cpu"), out=tmp_path)
    assert curves["protocol"]["images"] == 20 and curves["protocol"]["targets"] == 9
    assert 0.0 < curves["metrics"]["mte"] < 1.0
    assert (tmp_path / "transition_curves.png").stat().st_size > 1000


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(digits_teacher, tmp_path, monkeypatch):
    overrides = [f"teacher.source={digits_teacher}", "student.arch=wrn-10-1", "iterations=6", "batch_size=16",
                 "student_steps=2", "checkpoint_every=2", "eval_every=2"]
    straight_dir, straight = runs.execute("train", "zskt", "zskt/digits", overrides, out=tmp_path / "a", device="cpu")

    real_step, calls = Game.step, []

    def dies_after_the_checkpoint_at_4(self, z):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(self, z)

    monkeypatch.setattr(Game, "step", dies_after_the_checkpoint_at_4)
    with pytest.raises(RunError, match="--resume"):
        runs.execute("train", "zskt", "zskt/digits", overrides, out=tmp_path / "b", device="cpu")
    monkeypatch.setattr(Game, "step", real_step)
    resumed_dir, resumed = runs.execute("train", "", device="cpu", resume=tmp_path / "b")

    assert resumed == straight
    assert (resumed_dir / "model.safetensors").read_bytes() == (straight_dir / "model.safetensors").read_bytes()

    def without_time(path):
        return [{k: v for k, v in json.loads(x).items() if k != "time"} for x in path.read_text().splitlines()]

    assert without_time(resumed_dir / "metrics.jsonl") == without_time(straight_dir / "metrics.jsonl")


def _cli(*args):
    from toolbox.cli import cli

    return CliRunner().invoke(cli, ["train", "zskt", *args])


def test_missing_teacher_is_one_line_usage_error(tmp_path):
    result = _cli("--teacher", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "teacher.source" in result.output and "nowhere" in result.output


def test_student_without_group_outputs_is_one_line_usage_error(digits_teacher, tmp_path):
    result = _cli("--teacher", str(digits_teacher), "--student", "mlp", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "'mlp' exposes no group outputs" in result.output


def test_distill_verb_runs_the_same_method(digits_teacher, tmp_path, monkeypatch):
    saved = {}
    real_save = runs.Run.save_images

    def spy(run, name, images, **kwargs):
        saved[name] = kwargs
        return real_save(run, name, images, **kwargs)

    monkeypatch.setattr(runs.Run, "save_images", spy)
    run_dir, metrics = runs.execute("distill", "zskt", "zskt/digits",
                                    [f"teacher.source={digits_teacher}", "student.arch=wrn-10-1", "iterations=2",
                                     "batch_size=8", "student_steps=1"], out=tmp_path / "d", device="cpu")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["verb"] == "distill" and info["status"] == "finished"
    assert metrics["iterations"] == 2 and (run_dir / "model.safetensors").is_file()
    # the samples grid says which class the teacher sees in each tile, how sure it is, and when
    labels = saved["samples"]["labels"]
    assert len(labels) == 8 and all(re.fullmatch(r"\d \d{1,3}%", label) for label in labels), labels
    assert "after iteration 2" in saved["samples"]["title"] and (run_dir / "images" / "samples.png").is_file()


def _short(teacher, *extra):
    return [f"teacher.source={teacher}", "iterations=1", "batch_size=16", "student_steps=2", *extra]


def test_bf16_runs_a_zskt_iteration_on_the_cpu_with_the_forward_passes_in_bf16(digits_teacher, tmp_path, monkeypatch):
    dtypes = []
    real_step = Game.step

    def watched_step(game, z):
        conv = next(m for m in game.student.modules() if isinstance(m, torch.nn.Conv2d))
        handle = conv.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
        try:
            return real_step(game, z)
        finally:
            handle.remove()

    monkeypatch.setattr(Game, "step", watched_step)
    out, metrics = runs.execute("distill", "zskt", "zskt/digits", _short(digits_teacher, "speed.amp=bf16"),
                                out=tmp_path / "bf16", device="cpu")
    assert json.loads((out / "run.json").read_text())["records"]["speed"] == {"amp": "bf16", "channels_last": False,
                                                                               "compile": False}
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the generator step and both student steps
    line = next(json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines() if "loss_student" in s)
    assert all(torch.isfinite(torch.tensor(line[k])) for k in ("loss_student", "loss_generator"))
    assert 0 <= metrics["accuracy"] <= 1


def test_compile_true_builds_and_runs_a_zskt_iteration(digits_teacher, tmp_path, monkeypatch):
    """speed.compile=true compiles the three forward passes. Inductor's C++ build of them takes about 4
    minutes on this CPU, so the test traces them with dynamo (backend "eager"): the capture is what
    compile=true adds to the game; the kernels are inductor's."""
    compiled = []
    real_compile = torch.compile

    def traced_only(fn, **kwargs):
        compiled.append(fn)
        return real_compile(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", traced_only)
    torch._dynamo.reset()
    out, metrics = runs.execute("distill", "zskt", "zskt/digits", _short(digits_teacher, "speed.compile=true"),
                                out=tmp_path / "compiled", device="cpu")
    assert len(compiled) == 3  # generator, student and teacher features
    assert json.loads((out / "run.json").read_text())["records"]["speed"]["compile"] is True
    assert 0 <= metrics["accuracy"] <= 1


def test_a_non_finite_loss_is_named_by_its_iteration_though_losses_are_read_once_per_window(digits_teacher, tmp_path,
                                                                                            monkeypatch):
    from toolbox.errors import NonFiniteLoss

    real_step, calls = Game.step, []

    def poisoned(game, z):
        out = real_step(game, z)
        calls.append(1)
        if len(calls) == 2:  # iteration 1 (0-based)
            out["loss_student"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(Game, "step", poisoned)
    with pytest.raises(NonFiniteLoss, match="loss became nan at step 1;"):
        runs.execute("distill", "zskt", "zskt/digits", _short(digits_teacher, "iterations=4", "eval_every=4", "sample_every=4",
                                                             "checkpoint_every=3"), out=tmp_path / "nan", device="cpu")
    assert len(calls) == 3  # read at the checkpoint of iteration 3, before anything was saved
    assert not (tmp_path / "nan" / "checkpoint").exists()
