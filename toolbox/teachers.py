"""Teachers of distillation methods: where they come from, and how they are frozen."""

from __future__ import annotations

from . import artifacts
from .errors import UsageError
from .runs import cached_run


def load_teacher(source: str, default_recipe: str, device):
    """-> artifacts.Loaded, frozen in eval mode. ``source`` empty: the supervised ``default_recipe``,
    trained once and then reused from the run cache."""
    if not source:
        source = str(cached_run("train", "supervised", recipe=default_recipe, device=str(device)))
    try:
        loaded = artifacts.load_model(source, device=device)
    except UsageError as e:
        raise UsageError(f"teacher.source: {e}") from None
    freeze(loaded.model)
    return loaded


def teacher_record(loaded, source: str, default_recipe: str) -> dict:
    """What a student's run.json and config.json record of its teacher: where it came from (a Hub repo
    at its exact commit, or a local folder), what it is, and for a default teacher the recipe that
    recreates it, so a student moved to another machine can say exactly what it needs."""
    record = {**loaded.source.describe(), "architecture": loaded.config["architecture"],
              "accuracy": (loaded.config.get("metrics") or {}).get("accuracy")}
    if not source:
        record["recipe"] = default_recipe
    return record


def freeze(model) -> None:
    """Eval mode (BN uses its running statistics) and no parameter gradients: gradients still flow
    through the teacher to its input (the generator step), but none are computed for its weights."""
    model.eval()
    model.requires_grad_(False)
