"""images/curves.png of every run: each logged number against the logged step, losses on one panel,
the other measurements on another, the learning rate on a third when there is one, and the recipe's
expected number drawn as a dashed line where it is a measured series."""

from __future__ import annotations

import json
import math
from pathlib import Path

SKIP = ("step", "time")


def read_series(metrics_path: Path) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} for every finite number in metrics.jsonl."""
    series: dict[str, list[tuple[int, float]]] = {}
    if not metrics_path.is_file():
        return series
    for line in metrics_path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill; the rest still plots
        for key, value in row.items():
            if key in SKIP or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            series.setdefault(key, []).append((int(row.get("step", 0)), float(value)))
    return series


def panels(series: dict) -> list[tuple[str, list[str]]]:
    losses = sorted(k for k in series if "loss" in k)
    rates = sorted(k for k in series if k == "lr" or k.endswith("_lr"))
    measured = sorted(k for k in series if k not in losses and k not in rates)
    return [(title, keys) for title, keys in (("loss", losses), ("measured", measured), ("learning rate", rates)) if keys]


def write_curves(run_dir: Path, expect=None, title: str = "") -> Path | None:
    """Write <run>/images/curves.png; None when nothing numeric was logged."""
    series = read_series(Path(run_dir) / "metrics.jsonl")
    groups = panels(series)
    if not groups:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(groups), 1, figsize=(7, 2.6 * len(groups)), sharex=True, squeeze=False)
    for ax, (name, keys) in zip(axes[:, 0], groups):
        for key in keys:
            steps, values = zip(*series[key])
            ax.plot(steps, values, marker="." if len(steps) < 50 else None, label=key)
        if expect is not None and expect.metric in keys:
            note = f" ({expect.source})" if expect.source else ""
            ax.axhline(expect.value, color="gray", linestyle="--", label=f"expected {expect.metric} {expect.value}{note}"[:80])
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("logged step (the method's epoch or iteration)")
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(run_dir) / "images" / "curves.png"
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
