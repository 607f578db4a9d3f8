"""docs/plugins.md documents every hook of toolbox/hookspecs.py with its exact arguments, and
names no hook that does not exist."""

import inspect
import re
from pathlib import Path

from toolbox import hookspecs

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def hooks() -> dict[str, str]:
    """hook name -> "name(arg, ...)" for every function marked @hookspec."""
    return {name: f"{name}({', '.join(inspect.signature(fn).parameters)})"
            for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, "toolbox_spec")}


def test_every_hook_has_a_reference_entry_with_its_arguments():
    documented = re.findall(r"^#### `(\w+\([^)]*\))`", DOC.read_text(), flags=re.M)
    assert sorted(documented) == sorted(hooks().values())


def test_the_hooks_are_found():
    assert {"register_methods", "register_recipes", "train", "evaluate"} <= set(hooks())
