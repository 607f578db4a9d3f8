"""The learned schedule as a file other recipes can use, and its plot.

Format (JSON, "toolbox-fds-schedule"): ``learning_rates`` holds K values, the k-th used for the
steps with int(K * step / total_steps) == k of whatever horizon the schedule is applied to;
``momentum`` and ``weight_decay`` are single values; ``history`` lists every outer step.
"""

from __future__ import annotations

import json
from pathlib import Path

FORMAT = "toolbox-fds-schedule"


def write_schedule(path: Path, learning_rates, momentum: float, weight_decay: float, **info) -> Path:
    doc = {"format": FORMAT, "learning_rates": [float(v) for v in learning_rates], "momentum": float(momentum),
           "weight_decay": float(weight_decay),
           "windows": "learning_rates[k] applies to steps with int(K * step / total_steps) == k", **info}
    Path(path).write_text(json.dumps(doc, indent=2))
    return Path(path)


def plot_schedules(history: list[dict], final_lrs, momentum: float, weight_decay: float):
    """Learning rate over the fraction of training, one line per outer step, the learned one in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    cmap = plt.get_cmap("viridis")
    for i, entry in enumerate(history):
        _steps(ax, entry["learning_rates"], color=cmap(i / max(1, len(history))), lw=1, alpha=0.7,
               label=f"outer step {entry['outer_step']}" if len(history) <= 10 else None)
    _steps(ax, final_lrs, color="black", lw=2.2, label="learned")
    ax.set_xlabel("fraction of training")
    ax.set_ylabel("learning rate")
    ax.set_title(f"FDS schedule (momentum {momentum:.3g}, weight decay {weight_decay:.3g})")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def _steps(ax, lrs, **kw):
    k = len(lrs)
    xs = [i / k for i in range(k + 1)]
    ax.step(xs, [*lrs, lrs[-1]], where="post", **kw)
