"""A run killed after a checkpoint and continued with --resume ends exactly where an uninterrupted run
ends: same final metrics, same metrics.jsonl, same weights (CPU, one thread)."""

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from toolbox import plugins, runs
from toolbox.cli import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


def interrupt_at_checkpoint(monkeypatch, step):
    """Ctrl-C as the run is about to write checkpoint ``step``: the last one on disk is step - 1."""
    save = runs.Run.save_checkpoint

    def save_or_interrupt(self, state, at):
        if at == step:
            raise KeyboardInterrupt
        save(self, state, at)

    monkeypatch.setattr(runs.Run, "save_checkpoint", save_or_interrupt)


def history(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "time"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_resume_is_exact(monkeypatch, tmp_path, train_args, epochs):
    cli_run = CliRunner()
    straight = cli_run.invoke(cli, [*train_args, "--out", str(tmp_path / "straight")])
    assert straight.exit_code == 0, straight.output

    with monkeypatch.context() as m:
        interrupt_at_checkpoint(m, 3)
        killed = cli_run.invoke(cli, [*train_args, "--out", str(tmp_path / "killed")])
    assert killed.exit_code == 1
    assert killed.stderr == f"error: interrupted; continue from the last checkpoint with: " \
                            f"toolbox train --resume {tmp_path / 'killed'}\n"
    info = json.loads((tmp_path / "killed" / "run.json").read_text())
    assert info["status"] == "interrupted" and len(history(tmp_path / "killed")) == 3  # epoch 3 logged, not saved

    resumed = cli_run.invoke(cli, ["train", "--resume", str(tmp_path / "killed"), "--threads", "1", "--device", "cpu"])
    assert resumed.exit_code == 0, resumed.output

    a, b = tmp_path / "straight", tmp_path / "killed"
    assert json.loads((a / "summary.json").read_text()) == json.loads((b / "summary.json").read_text())
    assert history(a) == history(b) and [h["step"] for h in history(b)] == list(range(1, epochs + 1))
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert json.loads((b / "run.json").read_text())["status"] == "finished"
    again = cli_run.invoke(cli, ["train", "--resume", str(b)])
    assert again.exit_code == 2 and "already finished" in again.stderr


def test_supervised_resume_matches_an_uninterrupted_run(monkeypatch, tmp_path):
    assert_resume_is_exact(monkeypatch, tmp_path, ["train", "supervised", "--arch", "mlp", "--epochs", "4",
                                                   "--threads", "1", "--device", "cpu"], epochs=4)


def test_mixup_example_plugin_resume_matches_an_uninterrupted_run(monkeypatch, tmp_path):
    """The example plugin draws lambda from the global RNG and pairs from run.generator: both restored."""
    monkeypatch.syspath_prepend(str(REPO / "examples" / "toolbox-compression-mixup"))
    import toolbox_mixup.hooks

    try:
        plugins.load().add_plugin("mixup", toolbox_mixup.hooks, dist="toolbox-compression-mixup", version="0.1.0")
        assert_resume_is_exact(monkeypatch, tmp_path, ["train", "mixup", "--epochs", "4", "--alpha", "1.0",
                                                       "--threads", "1", "--device", "cpu"], epochs=4)
    finally:
        for name in [n for n in sys.modules if n.startswith("toolbox_mixup")]:
            del sys.modules[name]


def test_resume_refuses_new_settings_and_non_runs(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path), "-o", "epochs=9"])
    assert result.exit_code == 2 and "--resume continues a run with its saved recipe" in result.stderr
    result = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "is not a run directory" in result.stderr
