"""``toolbox compare``: many finished runs as one table. Runs that differ only by seed form a group;
each group shows the mean and standard deviation of one metric over its runs, the number its recipe
expects (a paper's, with its source) and the difference, like the tables of the papers compared.

What makes a group is a list of keys: the run's method, dataset, teacher and student architectures
and ipc by default, or any recipe key (``data.batch_size``, ``loss.kind``) named with ``--by``.
Only files every run has are read (run.json, recipe.yaml, summary.json, config.json); nothing is
recomputed. No torch: comparing is reading.
"""

from __future__ import annotations

import json
import math
import statistics
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError

# the columns a group is told apart by unless --by says otherwise; those no run has are left out
DEFAULT_BY = ("method", "dataset", "teacher", "student", "ipc", "loss")


# recipe keys that never make runs different experiments: the seed is what a group averages over, the
# rest describe rather than configure; the default columns already show the others they stand for
NOT_SETTINGS = {"seed", "description", "expect", "method", "data.dataset", "student.arch", "model.arch", "ipc",
                "loss.kind"}


@dataclass
class RunRow:
    path: Path
    seed: int | None
    values: dict  # grouping key -> value (a string, or None when the run has none)
    summary: dict
    expect: dict | None
    settings: dict  # every other recipe key (dotted) -> its value as text
    protocol: str  # the recipe's description: what was run, in its author's words


@dataclass
class Group:
    key: tuple
    runs: list[RunRow] = field(default_factory=list)

    def numbers(self, metric: str) -> list[float]:
        return [float(r.summary[metric]) for r in self.runs if _is_number(r.summary.get(metric))]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def find_runs(paths) -> tuple[list[Path], list[str]]:
    """Run directories among ``paths`` (a run, or a folder whose subfolders are runs); and why others were
    left out (not a run; not finished)."""
    found, skipped = [], []
    for p in map(Path, paths):
        candidates = [p] if (p / "run.json").is_file() else sorted(c for c in p.iterdir() if (c / "run.json").is_file()) \
            if p.is_dir() else []
        if not candidates:
            skipped.append(f"{p}: not a run directory")
        for c in candidates:
            try:
                info = json.loads((c / "run.json").read_text())
            except (OSError, ValueError):
                skipped.append(f"{c}: unreadable run.json")
                continue
            if info.get("status") != "finished":
                skipped.append(f"{c}: {info.get('status', 'unknown')}, not finished")
                continue
            if not (c / "summary.json").is_file():
                skipped.append(f"{c}: finished but holds no summary.json")
                continue
            found.append(c)
    return list(dict.fromkeys(found)), skipped


def _recipe(run: Path) -> dict:
    import yaml

    try:
        return yaml.safe_load((run / "recipe.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _dig(tree, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def read_row(run: Path, by: list[str]) -> RunRow:
    info = json.loads((run / "run.json").read_text())
    recipe = _recipe(run)
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    records = info.get("records") or {}
    known = {
        "method": info.get("method"),
        "verb": info.get("verb"),
        "dataset": _dig(recipe, "data.dataset") or config.get("dataset"),
        "teacher": (records.get("teacher") or {}).get("architecture"),
        "student": config.get("architecture") or _dig(recipe, "student.arch") or _dig(recipe, "model.arch"),
        "ipc": recipe.get("ipc"),
        "loss": _dig(recipe, "loss.kind"),
        "seed": info.get("seed"),
        "world_size": info.get("world_size"),
    }
    values = {}
    for key in by:
        value = known[key] if key in known else _dig(recipe, key)
        values[key] = None if value is None else (json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    summary = json.loads((run / "summary.json").read_text())
    settings = {k: v for k, v in _flat(recipe).items()
                if k not in NOT_SETTINGS and not k.startswith("expect.") and k.rpartition(".")[2] != "note"}
    return RunRow(run, info.get("seed"), values, summary, recipe.get("expect"), settings,
                  str(recipe.get("description") or ""))


def _flat(tree, prefix: str = "") -> dict:
    out = {}
    for k, v in (tree or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, list) else str(v)
    return out


def compare(paths, by: list[str] | None = None, metric: str | None = None) -> dict:
    """The comparison as a plain dict: columns, metric, one entry per group (in first-seen order), skipped runs."""
    runs, skipped = find_runs(paths)
    if not runs:
        why = f" ({skipped[0]}{' and more' if len(skipped) > 1 else ''})" if skipped else ""
        raise UsageError(f"no finished runs to compare{why}; pass run directories or a folder holding them")
    rows = [read_row(r, list(by or DEFAULT_BY)) for r in runs]
    columns = list(by) if by else [k for k in DEFAULT_BY if any(r.values[k] is not None for r in rows)]
    if not by:
        # runs that differ in anything but the seed are different experiments: every recipe key whose
        # value differs among the runs becomes a column of its own
        # (within runs the default columns already tell apart: a dc and a kd run differ in every key)
        by_default: dict[tuple, list[RunRow]] = {}
        for r in rows:
            by_default.setdefault(tuple(r.values[c] for c in columns), []).append(r)
        for same in by_default.values():
            varying = sorted({k for r in same for k in r.settings if len({x.settings.get(k) for x in same}) > 1})
            # named per run by where it departs from the most common value in its group: a column for
            # every such key would make a table nobody can read
            common = {k: Counter(r.settings.get(k) for r in same).most_common(1)[0][0] for k in varying}
            for r in same:
                r.values["settings"] = ", ".join(f"{k}={r.settings.get(k, '-')}" for k in varying
                                                 if r.settings.get(k) != common[k]) or None
                r.values["_varying"] = json.dumps({k: r.settings.get(k) for k in varying}) if varying else None
        if any(r.values["settings"] for r in rows):
            columns.append("settings")
    if metric is None:
        wanted = {(r.expect or {}).get("metric") for r in rows} - {None}
        metric = wanted.pop() if len(wanted) == 1 else "accuracy"
    if not any(_is_number(r.summary.get(metric)) for r in rows):
        have = sorted({k for r in rows for k, v in r.summary.items() if _is_number(v)})
        raise UsageError(f"no run reports '{metric}'; --metric one of: {', '.join(have) or 'none'}")
    groups: dict[tuple, Group] = {}
    for r in rows:
        key = tuple(r.values.get(c) for c in columns) + (r.values.get("_varying"),)
        groups.setdefault(key, Group(key)).runs.append(r)
    return {"metric": metric, "by": columns, "groups": [_describe(g, columns, metric) for g in groups.values()],
            "skipped": skipped}


def _describe(group: Group, columns: list[str], metric: str) -> dict:
    numbers = group.numbers(metric)
    mean = statistics.fmean(numbers) if numbers else None
    # the sample standard deviation over seeds, as the compared papers report it; none for one run
    std = statistics.stdev(numbers) if len(numbers) > 1 else None
    expects = {json.dumps(r.expect, sort_keys=True) for r in group.runs if r.expect and r.expect.get("metric") == metric}
    expect = json.loads(expects.pop()) if len(expects) == 1 else None
    expected = expect.get("value") if expect else None
    return {
        **dict(zip(columns, group.key)),
        **({"setting_values": json.loads(group.key[-1])} if group.key[-1] else {}),
        "runs": len(group.runs), "measured": len(numbers), "seeds": sorted({r.seed for r in group.runs if r.seed is not None}),
        "mean": mean, "std": std,
        "expected": expected, "expected_source": expect.get("source") if expect else None,
        "delta": mean - expected if mean is not None and expected is not None else None,
        "protocol": " | ".join(dict.fromkeys(r.protocol for r in group.runs if r.protocol)) or None,
        "paths": [str(r.path) for r in group.runs],
    }


# --- presentation ------------------------------------------------------------------------------


def _number(v, scale: float) -> str:
    return "" if v is None else f"{v * scale:.2f}"


def _scale(metric: str, result: dict) -> float:
    """Accuracies in percent, as the papers print them; other metrics as they are."""
    values = [g[k] for g in result["groups"] for k in ("mean", "expected") if g[k] is not None]
    return 100.0 if "accuracy" in metric and values and all(0 <= v <= 1 for v in values) else 1.0


def rows(result: dict) -> tuple[list[str], list[list[str]]]:
    metric = result["metric"]
    scale = _scale(metric, result)
    unit = " (%)" if scale == 100 else ""
    header = [*result["by"], "runs", f"{metric}{unit}", "expected", "Δ"]
    body = []
    for g in result["groups"]:
        measured = _number(g["mean"], scale)
        if g["std"] is not None:
            measured += f" ± {_number(g['std'], scale)}"
        delta = "" if g["delta"] is None else f"{g['delta'] * scale:+.2f}"
        body.append([*(g[c] or "-" for c in result["by"]), str(g["runs"]), measured, _number(g["expected"], scale),
                     delta])
    return header, body


def markdown(result: dict) -> str:
    header, body = rows(result)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in body]
    notes = [f"expected: {s}" for s in sources(result)] + [f"protocol: {p}" for p in protocols(result)]
    out += [""] * bool(notes) + notes
    return "\n".join(out) + "\n"


def sources(result: dict) -> list[str]:
    return list(dict.fromkeys(g["expected_source"] for g in result["groups"] if g["expected_source"]))


def protocols(result: dict) -> list[str]:
    return list(dict.fromkeys(g["protocol"] for g in result["groups"] if g["protocol"]))


def plot(result: dict, path: Path) -> Path:
    """One bar per group (mean, the standard deviation as an error bar), the expected number as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, scale = result["metric"], _scale(result["metric"], result)
    groups = result["groups"]
    labels = ["\n".join(textwrap.fill(str(g[c]).replace(", ", " "), 18, break_long_words=False)
                        for c in result["by"] if g[c] is not None) or str(i) for i, g in enumerate(groups)]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(groups) + 1.5), 4.2))
    xs = range(len(groups))
    ax.bar(xs, [(g["mean"] or 0) * scale for g in groups], yerr=[(g["std"] or 0) * scale for g in groups],
           capsize=4, color="#4c72b0", label="mean over runs (± std)")
    expected = [(i, g["expected"] * scale) for i, g in enumerate(groups) if g["expected"] is not None]
    if expected:
        ax.scatter([i for i, _ in expected], [v for _, v in expected], marker="_", s=900, color="#c44e52",
                   linewidths=2.5, zorder=3, label="expected (recipe)")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel(f"{metric}{' (%)' if scale == 100 else ''}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{metric} by {', '.join(result['by'])}", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
