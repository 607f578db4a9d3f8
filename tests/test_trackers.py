"""--log tensorboard / --log mlflow mirror metrics.jsonl into the trackers' own formats (read back
here with the trackers' own readers); a plugin can add a sink through register_loggers; an unknown
or unavailable tracker is one line before anything runs."""

import json

import pytest
from click.testing import CliRunner

from toolbox import plugins
from toolbox.cli import cli

MLP = ["train", "supervised", "--arch", "mlp", "--epochs", "3", "--threads", "1", "--device", "cpu"]


def _train(out, *args):
    plugins.reset()
    result = CliRunner().invoke(cli, [*MLP, "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_event_files_hold_every_logged_number(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    lines = _train(tmp_path / "run", "--log", "tensorboard")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    for key in ("train_loss", "accuracy", "lr"):
        written = [(e.step, e.value) for e in events.Scalars(key)]
        assert written == [(line["step"], pytest.approx(line[key], rel=1e-6)) for line in lines], key


def test_an_mlflow_run_holds_the_metrics_params_and_images(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    lines = _train(out, "--log", "mlflow")
    records = json.loads((out / "run.json").read_text())["records"]
    assert records["loggers"] == ["mlflow"] and records["mlflow_tracking_uri"].startswith("file:")
    client = MlflowClient(tracking_uri=records["mlflow_tracking_uri"])
    run = client.get_run(records["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["seed"] == "0"
    history = client.get_metric_history(run.info.run_id, "accuracy")
    assert sorted((m.step, m.value) for m in history) == [(line["step"], line["accuracy"]) for line in lines]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "images")}
    assert "images/curves.png" in artifacts


def test_a_plugin_sink_receives_each_log_line_and_the_final_status(tmp_path, monkeypatch):
    from toolbox.hookspecs import hookimpl
    from toolbox.registry import Logger

    seen = []

    class Sink:
        def log(self, step, metrics):
            seen.append((step, metrics["accuracy"]))

        def close(self, status):
            seen.append(status)

    class Plugin:
        @hookimpl
        def register_loggers(self, register):
            register(Logger("memory", lambda run_dir, info: Sink(), "in this test's memory"))

    plugins.reset()
    pm = plugins.load()
    pm.pm.register(Plugin(), name="memory-sink")
    pm._register_all(only="memory-sink")
    from toolbox import runs

    out = tmp_path / "run"
    runs.execute("train", "supervised", None, ["model.arch=mlp", "epochs=2"], out=out, device="cpu", log=["memory"])
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert seen == [(line["step"], line["accuracy"]) for line in lines] + ["finished"]


@pytest.mark.parametrize("args, expect", [
    (["--log", "wandb"], "unknown logger 'wandb'"),
])
def test_an_unknown_tracker_is_one_line_and_writes_nothing(tmp_path, args, expect):
    plugins.reset()
    result = CliRunner().invoke(cli, [*MLP, "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and expect in result.stderr
    assert not (tmp_path / "run").exists()
