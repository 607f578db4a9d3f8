"""Core's metrics sinks for experiment trackers (``--log tensorboard``, ``--log mlflow``): each run's
logged numbers also go to TensorBoard event files or an MLflow run. metrics.jsonl stays the source
of truth; a sink only mirrors it. Both packages are optional extras, named when missing."""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import UsageError


def _numbers(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoardSink:
    def __init__(self, writer):
        self.writer = writer

    def log(self, step: int, metrics: dict) -> None:
        for key, value in _numbers(metrics).items():
            self.writer.add_scalar(key, value, step)

    def close(self, status: str) -> None:
        self.writer.close()


def open_tensorboard(run_dir: Path, info: dict) -> TensorBoardSink:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError("--log tensorboard needs the tensorboard package: "
                         "pip install 'toolbox-compression[tensorboard]'") from None
    writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
    writer.add_text("run", f"toolbox {info.get('verb')} {info.get('method')}, seed {info.get('seed')}, "
                           f"recipe hash {info.get('recipe_hash', '')[:12]}")
    return TensorBoardSink(writer)


class MLflowSink:
    def __init__(self, client, run_id: str, run_dir: Path):
        self.client, self.run_id, self.run_dir = client, run_id, run_dir

    def record(self) -> dict:
        """What run.json keeps, so that --resume continues this MLflow run."""
        return {"mlflow_run_id": self.run_id, "mlflow_tracking_uri": self.client.tracking_uri}

    def log(self, step: int, metrics: dict) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        numbers = [Metric(k, v, now, step) for k, v in _numbers(metrics).items()]
        if numbers:
            self.client.log_batch(self.run_id, metrics=numbers)

    def close(self, status: str) -> None:
        for image in sorted((self.run_dir / "images").glob("*.png")):
            self.client.log_artifact(self.run_id, str(image), artifact_path="images")
        for name in ("recipe.yaml", "summary.json"):
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        mlflow_status = {"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.run_id, status=mlflow_status)


def open_mlflow(run_dir: Path, info: dict) -> MLflowSink:
    """An MLflow run in experiment ``toolbox-<method>`` at MLFLOW_TRACKING_URI, or, when that is
    unset, in a file store inside the run directory (nothing leaves the machine unasked). A resumed
    run continues the MLflow run it started (its id is recorded in run.json)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UsageError("--log mlflow needs the mlflow package: pip install 'toolbox-compression[mlflow]'") from None
    run_dir = Path(run_dir)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = (run_dir / "mlruns").resolve().as_uri()
        # MLflow 3 keeps the file store only on request; it is the store that needs no database or server
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    previous = (info.get("records") or {}).get("mlflow_run_id")
    if previous:
        client.update_run(previous, status="RUNNING")
        return MLflowSink(client, previous, run_dir)
    name = f"toolbox-{info.get('method')}"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run = client.create_run(experiment_id, run_name=run_dir.name, tags={
        "toolbox.verb": str(info.get("verb")), "toolbox.method": str(info.get("method")),
        "toolbox.run_dir": str(run_dir.resolve())})
    for key in ("seed", "device", "recipe_hash", "toolbox_version", "plugin_version"):
        if info.get(key) is not None:
            client.log_param(run.info.run_id, key, info[key])
    return MLflowSink(client, run.info.run_id, run_dir)
