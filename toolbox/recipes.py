"""Recipes: YAML (safe_load only) -> validated, typed config, with -o key.sub=value overrides.

A recipe is one reproducible experiment. Recipes come from strangers (the Hub), so no YAML tags
that import or call code are honoured: ``yaml.safe_load`` only, and every key is checked against
the method's pydantic schema. Errors name the key and list the valid ones.
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import UsageError


class Section(BaseModel):
    """Base for nested recipe sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Expect(Section):
    """The published number a recipe targets, so results can be compared with the paper."""

    metric: str = "accuracy"
    value: float
    std: float | None = None
    source: str = ""
    note: str = ""


class RecipeBase(Section):
    method: str
    seed: int = 0
    description: str = ""
    expect: Expect | None = None
    checkpoint_every: int = 0  # steps between checkpoints; 0 = the method's default


# --- finding recipes ---------------------------------------------------------------------------


def recipe_roots():
    """(plugin, folder) pairs registered through register_recipes, core's recipes/ first."""
    from . import plugins

    return plugins.load().registry.recipe_roots


def list_recipes() -> list[dict]:
    import yaml

    found = []
    for plugin, root in recipe_roots():
        for path in sorted(_walk(root), key=lambda p: str(p)):
            name = _relative_name(root, path)
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError:
                data = {"method": "?(invalid YAML)"}
            found.append({"name": name, "method": data.get("method", "?"), "plugin": plugin,
                          "expect": data.get("expect"), "description": data.get("description", ""), "path": str(path)})
    return found


def _walk(root):
    for child in root.iterdir():
        if child.is_dir():
            yield from _walk(child)
        elif child.name.endswith((".yaml", ".yml")):
            yield child


def _relative_name(root, path) -> str:
    rel = str(path)[len(str(root)):].lstrip("/\\")
    return rel.rsplit(".", 1)[0].replace("\\", "/")


def find_recipe(ref: str):
    """A path to an existing file, or a registered recipe name like ``zskt/digits``."""
    p = Path(ref)
    if p.is_file():
        return p
    wanted = ref.rsplit(".", 1)[0] if ref.endswith((".yaml", ".yml")) else ref
    wanted = wanted.removeprefix("recipes/")
    names = {}
    for _, root in recipe_roots():
        for path in _walk(root):
            names.setdefault(_relative_name(root, path), path)
    if wanted in names:
        return names[wanted]
    close = difflib.get_close_matches(wanted, sorted(names), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `toolbox recipes`"
    raise UsageError(f"recipe '{ref}' is neither a file nor a known recipe{hint}")


def recipe_exists(name: str) -> bool:
    try:
        find_recipe(name)
        return True
    except UsageError:
        return False


# --- loading and validation --------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UsageError(f"override '{text}' is not of the form key.sub=value (e.g. -o optim.lr=0.01)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides) -> dict:
    for item in overrides:
        path, value = parse_override(item) if isinstance(item, str) else item
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return data


def read_yaml(source) -> dict:
    import yaml

    name = str(source)
    try:
        data = yaml.safe_load(source.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"recipe {name} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    except OSError as e:
        raise UsageError(f"cannot read recipe {name}: {e.strerror}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"recipe {name} must be a mapping of keys to values, not a {type(data).__name__}")
    return data


def load_recipe(method, ref: str | None, overrides=()):
    """-> (validated recipe, resolved YAML text)."""
    ref = ref or method.default_recipe
    data = read_yaml(find_recipe(ref)) if ref else {}
    data.setdefault("method", method.name)
    if data["method"] != method.name:
        raise UsageError(f"recipe {ref} is for method '{data['method']}', not '{method.name}'; "
                         f"run it with `toolbox <verb> {data['method']}` or pick another recipe")
    apply_overrides(data, overrides)
    if data.get("method") != method.name:
        raise UsageError("the 'method' key cannot be overridden; choose the method on the command line")
    schema = method.recipe_model()
    try:
        recipe = schema.model_validate(data)
    except ValidationError as e:
        raise UsageError(format_validation_error(e, schema, ref)) from None
    return recipe, dump(recipe)


def dump(recipe) -> str:
    import yaml

    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def recipe_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _fields_at(schema, path) -> list[str] | None:
    """The valid keys of the (nested) section at ``path``, or None if the path leaves the schema."""
    model = schema
    for part in path:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        model = _section_type(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return None


def _section_type(annotation):
    import typing

    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def format_validation_error(err: ValidationError, schema, ref) -> str:
    """One line for the first problem: the key, what is wrong, and the valid keys there."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"] if not isinstance(p, int)]
    key = ".".join(loc)
    origin = f" in recipe {ref}" if ref else ""
    if first["type"] == "extra_forbidden":
        valid = _fields_at(schema, loc[:-1]) or []
        close = difflib.get_close_matches(loc[-1], valid, n=1)
        hint = f" (did you mean '{'.'.join(loc[:-1] + [close[0]])}'?)" if close else ""
        where = f" under '{'.'.join(loc[:-1])}'" if loc[:-1] else ""
        return f"unknown recipe key '{key}'{origin}{hint}; valid keys{where}: {', '.join(valid)}"
    if first["type"] == "missing":
        return f"recipe key '{key}' is required{origin}"
    got = first.get("input")
    shown = repr(got) if not isinstance(got, dict) else "a mapping"
    return f"recipe key '{key}'{origin}: {first['msg']} (got {shown})"
