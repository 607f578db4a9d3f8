"""docs/plugins.md documents every hook of toolbox/hookspecs.py with its exact arguments, names no
hook that does not exist, and shows the example plugin's files as they are."""

import inspect
import re
from pathlib import Path

from toolbox import hookspecs

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
EXAMPLE = DOC.parents[1] / "examples" / "toolbox-compression-mixup"


def hooks() -> dict[str, str]:
    """hook name -> "name(arg, ...)" for every function marked @hookspec."""
    return {name: f"{name}({', '.join(inspect.signature(fn).parameters)})"
            for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, "toolbox_spec")}


def test_every_hook_has_a_reference_entry_with_its_arguments():
    documented = re.findall(r"^#### `(\w+\([^)]*\))`", DOC.read_text(), flags=re.M)
    assert sorted(documented) == sorted(hooks().values())


def test_the_hooks_are_found():
    assert {"register_methods", "register_recipes", "train", "evaluate"} <= set(hooks())


def test_the_tutorials_file_blocks_are_the_example_plugins_files():
    """A block announced by `<!-- file: PATH -->` is the example's PATH, complete: the tutorial cannot drift."""
    text = DOC.read_text()
    shown = re.findall(r"^<!-- file: (\S+) -->\n```\w*\n(.*?)^```$", text, flags=re.M | re.S)
    assert len(shown) == text.count("<!-- file: ")  # every announcement is followed by its block
    assert {path for path, _ in shown} == {"pyproject.toml", "toolbox_mixup/recipe.py", "toolbox_mixup/hooks.py",
                                          "toolbox_mixup/training.py", "toolbox_mixup/recipes/mixup/digits.yaml"}
    for path, block in shown:
        assert block == (EXAMPLE / path).read_text(), f"docs/plugins.md shows an outdated {path}: paste the file in"


def test_the_line_counts_the_tutorial_quotes_are_the_files():
    quoted = re.findall(r"\(`(\w+\.py)`, (\d+)\s+lines", DOC.read_text())
    assert sorted(name for name, _ in quoted) == ["hooks.py", "recipe.py", "training.py"]
    for name, lines in quoted:
        assert int(lines) == len((EXAMPLE / "toolbox_mixup" / name).read_text().splitlines()), name


def test_the_engine_example_of_core_api_runs(tmp_path):
    """docs/core-api.md's Engine example is real code: it trains an MLP on digits for one epoch."""
    from types import SimpleNamespace

    import torch

    from toolbox.classifier_recipe import ClassifierRecipe
    from toolbox.runs import Run

    text = (DOC.parent / "core-api.md").read_text().split("## Engine (`toolbox.engine`)", 1)[1]
    namespace: dict = {}
    exec(text.split("```python\n", 1)[1].split("```", 1)[0], namespace)
    recipe = ClassifierRecipe.model_validate({"method": "example", "model": {"arch": "mlp"}, "epochs": 1})
    (tmp_path / "run.json").write_text("{}")
    metrics = namespace["train_classifier"](recipe, Run(tmp_path, SimpleNamespace(seed=0), "example", "train",
                                                        torch.device("cpu")))
    assert set(metrics) == {"train_loss", "lr", "accuracy"} and metrics["accuracy"] > 0.5
