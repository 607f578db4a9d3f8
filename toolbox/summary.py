"""What a finished run says to a person: each final number with what it means and what it was
measured on, the recipe's expected number and the difference, whether a better value was seen
during training (the reported one is always the last, never picked on the test set), and the
pictures to look at. Printed at the end of a run and by `toolbox show RUN`."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ToolboxError

# meanings of the metrics several methods report; a method adds or overrides its own through
# Method.metrics in its registration
COMMON = {
    "accuracy": "fraction of the test split's images the final model classifies correctly",
    "accuracy_std": "standard deviation of that accuracy over the evaluation models",
    "error": "1 - accuracy",
    "train_loss": "mean training loss over the last epoch's batches",
    "loss": "the method's training objective, mean over its last logging window",
    "teacher_accuracy": "the teacher's accuracy on the same test images",
}


def describe(run_dir: Path) -> dict:
    """Everything the summary prints, as data: {path, method, verb, dataset, test_images, rows, expect,
    best, images}. Reads only the run's own files (and the dataset's test split size)."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    final = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    recipe = _recipe(run_dir)
    meanings = {**COMMON, **_method_meanings(info.get("method"))}
    rows = [(k, v, meanings.get(k, "")) for k, v in final.items() if not isinstance(v, (dict, list))]
    dataset = (recipe.get("data") or {}).get("dataset")
    out = {"path": str(run_dir), "method": info.get("method"), "verb": info.get("verb"), "status": info.get("status"),
           "dataset": dataset, "test_images": _test_images(dataset), "rows": rows, "expect": None, "best": None,
           "images": sorted(str(p) for p in (run_dir / "images").glob("*.png") if not p.stem[-1:].isdigit())}
    expect = recipe.get("expect") or None
    metric = (expect or {}).get("metric", "accuracy")
    if expect and isinstance(final.get(metric), (int, float)):
        out["expect"] = {**expect, "got": final[metric], "difference": final[metric] - expect["value"]}
    seen = _series(run_dir / "metrics.jsonl", metric)
    if seen and isinstance(final.get(metric), (int, float)):
        step, best = max(seen, key=lambda s: s[1]) if "loss" not in metric else min(seen, key=lambda s: s[1])
        if best != final[metric]:
            out["best"] = {"metric": metric, "value": best, "step": step, "last": final[metric]}
    return out


def print_summary(run_dir: Path, console=None) -> None:
    import click
    from rich.console import Console
    from rich.table import Table

    d = describe(run_dir)
    console = console or Console()
    click.echo(f"{d['verb']} {d['method']}: {d['status']}\n  {d['path']}")  # the path whole, on its own line
    table = Table(show_header=True)
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("meaning")
    for name, value, meaning in d["rows"]:
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value), meaning)
    console.print(table)
    if d["dataset"]:
        size = f", {d['test_images']} images" if d["test_images"] else ""
        console.print(f"measured on the {d['dataset']} test split{size}, with the model as it was after its last step")
    if d["expect"]:
        e = d["expect"]
        source = f" ({e['source']})" if e.get("source") else ""
        console.print(f"expected {e['metric']} {e['value']}{source}; this run {e['got']:.4f}, "
                      f"difference {e['difference']:+.4f}")
    if d["best"]:
        b = d["best"]
        console.print(f"reported: the last {b['metric']} ({b['last']:.4f}); during training it reached "
                      f"{b['value']:.4f} at logged step {b['step']}, which is not reported (that would pick on the test set)")
    if d["images"]:
        click.echo("images:\n" + "\n".join(f"  {p}" for p in d["images"]))


def _recipe(run_dir: Path) -> dict:
    import yaml

    try:
        return yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _method_meanings(name: str | None) -> dict:
    from .registry import current

    method = current().methods.get(name or "")
    return dict(getattr(method, "metrics", None) or {})


def _test_images(dataset: str | None) -> int | None:
    if not dataset:
        return None
    try:
        from . import data

        return len(data.load(dataset).test_y)
    except (ToolboxError, OSError):  # a dataset no longer on disk: the summary still prints, without the count
        return None


def _series(path: Path, metric: str) -> list[tuple[int, float]]:
    from .curves import read_series

    return read_series(path).get(metric, [])
