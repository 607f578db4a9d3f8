"""Teachers of distillation methods: where they come from, and how they are frozen."""

from __future__ import annotations

from pydantic import model_validator

from . import artifacts
from .errors import UsageError
from .recipes import Section
from .runs import cached_run


def load_teacher(source: str, default_recipe: str, device):
    """-> artifacts.Loaded, frozen in eval mode. ``source`` empty: the supervised ``default_recipe``,
    trained once and then reused from the run cache."""
    if not source:
        source = str(cached_run("train", "supervised", recipe=default_recipe, device=str(device),
                                why="it is this run's default teacher",
                                skip="--teacher RUN_OR_REF distils from your own"))
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


class TeacherSection(Section):
    """The ``teacher:`` recipe section of every distillation method."""

    # a run directory, a model folder or hf-hub:org/name@rev; empty = train (or reuse) `recipe`
    source: str = ""
    recipe: str = "supervised/digits"  # supervised recipe of the teacher used when source is empty

    @model_validator(mode="after")
    def _exists(self):
        """A missing or wrong teacher is refused before the run directory exists."""
        from .artifacts import check_model_ref
        from .recipes import find_recipe

        if self.source:
            check_model_ref(self.source, "teacher.source")
        else:
            try:
                find_recipe(self.recipe)
            except UsageError as e:
                raise UsageError(f"teacher.recipe: {e}") from None
        return self
