"""Recipes: YAML (safe_load only) -> validated, typed config, with -o key.sub=value overrides.

A recipe is one reproducible experiment. Recipes come from strangers (the Hub), so no YAML tags
that import or call code are honoured (a yaml.SafeLoader, which also refuses a key given twice), and
every key is checked against the method's pydantic schema: errors name the key and list the valid
keys, or the valid range of a number. Validators that look names up (datasets, architectures,
teachers) raise UsageError, which pydantic passes through unchanged, so their message is the line.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from .errors import UsageError

# --- bounded numbers ----------------------------------------------------------------------------
# Every int and float of every recipe schema carries its valid range, so a negative batch size or
# epochs=1e20 is refused with the key and the range instead of running something else (a test walks
# every registered schema for fields without a lower bound). Ints are strict: 3.5, 1e20 and true are
# not counts. The upper bounds only catch the absurd.

MAX_STEPS = 10**7  # epochs, iterations, steps, intervals
MAX_BATCH = 10**6
MAX_SEED = 2**32 - 1  # numpy's seed range


def _no_bool(value):
    if isinstance(value, bool):
        raise ValueError("a number is needed, not true/false")
    return value


def Int(ge: int, le: int) -> Any:
    """An integer field type in [ge, le] that refuses floats, strings and booleans."""
    return Annotated[int, Field(strict=True, ge=ge, le=le)]


def Float(*, ge: float | None = None, gt: float | None = None, le: float | None = None,
          lt: float | None = None) -> Any:
    """A finite float field type in the given range (ints are accepted, booleans are not)."""
    return Annotated[float, BeforeValidator(_no_bool), Field(ge=ge, gt=gt, le=le, lt=lt, allow_inf_nan=False)]


Count = Int(1, MAX_STEPS)  # epochs, iterations, steps, models: at least one
Interval = Int(0, MAX_STEPS)  # every N steps/epochs; 0 = the method's default
BatchSize = Int(1, MAX_BATCH)
Seed = Int(0, MAX_SEED)
LearningRate = Float(gt=0, le=10)
Momentum = Float(ge=0, lt=1)
WeightDecay = Float(ge=0, le=1)
Probability = Float(ge=0, le=1)  # also mixing weights and fractions
Temperature = Float(gt=0, le=1000)
LossWeight = Float(ge=0, le=1e6)
MetricValue = Float(ge=0, le=1e12)


def _registered(kind: str):
    def check(name: str) -> str:
        from .registry import current

        getattr(current(), kind)(name)  # a UsageError naming the valid ones (it passes through pydantic)
        return name

    return check


def _dataset_reference(ref: str) -> str:
    """A registered name, a folder of class subfolders or hf-hub:org/name[@rev] (toolbox.data.refs),
    made canonical (folders absolute) so that the saved recipe names the same data from anywhere."""
    from .data import refs
    from .registry import current

    registered = current().datasets
    canonical = refs.canonical(ref, registered)
    if refs.kind(refs.split_options(canonical)[0], registered) == "name":
        current().dataset(canonical)  # a UsageError naming the valid ones
    return canonical


# names checked against the registry when the recipe is validated, before a run directory exists
DatasetName = Annotated[str, AfterValidator(_dataset_reference)]
ArchName = Annotated[str, AfterValidator(_registered("architecture"))]


def increasing(values: list) -> list:
    """For milestone lists: a repeated or out-of-order milestone is a typo, not a schedule."""
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError("must increase strictly, e.g. [60, 120, 160]")
    return values


class Section(BaseModel):
    """Base for nested recipe sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DataSource(Section):
    """The keys of a ``data:`` section that say which images: ``dataset`` (any reference, see
    toolbox.data.refs), and for folders and Hub datasets the decoded ``image_size`` (square; default the
    modal size) and ``channels`` (1 or 3; default as the images are). The two are folded into the
    reference (``/abs/photos?image_size=32``), which is what runs, checkpoints and condensed sets record."""

    dataset: DatasetName = "digits"
    image_size: Int(4, 4096) | None = None
    channels: Literal[1, 3] | None = None

    @model_validator(mode="after")
    def _fold_options(self):
        from .data import refs
        from .registry import current

        base, given = refs.split_options(self.dataset)
        size = self.image_size if self.image_size is not None else given.get("image_size")
        channels = self.channels if self.channels is not None else given.get("channels")
        self.dataset = refs.canonical(base, current().datasets, image_size=size, channels=channels)
        self.image_size, self.channels = size, channels
        return self


class ArchSection(Section):
    """Base of sections with ``arch`` and ``kwargs``: a kwargs name the architecture's constructor does
    not take is refused when the recipe is validated, not by a TypeError once the run has started."""

    @model_validator(mode="after")
    def _known_kwargs(self):
        import inspect

        from .registry import current, resolve

        arch, kwargs = getattr(self, "arch", None), getattr(self, "kwargs", None) or {}
        if not kwargs or not isinstance(arch, str):
            return self
        build = resolve(current().architecture(arch).build)
        params = inspect.signature(build).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return self
        takes = [n for n in params if n not in ("self", "num_classes", "in_channels", "image_size")]
        unknown = sorted(set(kwargs) - set(takes))
        if unknown:
            raise UsageError(f"architecture '{arch}' takes no {', '.join(repr(k) for k in unknown)} in its kwargs; "
                             f"it takes: {', '.join(takes) or 'nothing'}")
        return self


class Expect(Section):
    """The published number a recipe targets, so results can be compared with the paper."""

    metric: str = "accuracy"
    value: MetricValue
    std: MetricValue | None = None
    source: str = ""
    note: str = ""


class Speed(Section):
    """The ``speed:`` section, the same keys in every method's recipe (toolbox.speed resolves it for a
    device). ``amp``: auto = bf16 where the GPU computes it natively (compute capability >= 8), fp16
    with a gradient scaler on older GPUs, fp32 on the CPU. ``channels_last``/``compile``: auto = on
    for CUDA. A method that must compute exactly (second derivatives, forward-mode hypergradients)
    resolves auto to fp32 and refuses anything else in one line."""

    amp: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool | Literal["auto"] = "auto"


class Parallel(Section):
    """The ``parallel:`` section, read when a run has several ranks (torchrun, ``--nproc``). sync_bn:
    batch norms normalise over the whole global batch (torch's SyncBatchNorm, CUDA only) instead of
    each rank's slice."""

    sync_bn: bool = False


class RecipeBase(Section):
    method: str
    seed: Seed = 0
    description: str = ""
    expect: Expect | None = None
    checkpoint_every: Interval = 0  # steps between checkpoints; 0 = the method's default
    speed: Speed = Speed()  # mixed precision, channels_last, torch.compile (toolbox.speed); recorded in run.json
    parallel: Parallel = Parallel()  # several ranks (toolbox.distributed)


# --- reading YAML ------------------------------------------------------------------------------


def _loader():
    """yaml.SafeLoader that refuses a key given twice in one mapping (YAML would keep the last
    silently) and reads 1e-3 as a number, as YAML 1.2 and every user do (1.1 wants 1.0e-3)."""
    import yaml

    class RecipeLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise DuplicateKey(key, seen[key], line)
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader's own error names it below
                    break
            return super().construct_mapping(node, deep=deep)

    RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789"))
    return RecipeLoader


EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


def _dumper():
    """yaml.SafeDumper that quotes strings the loader would read as numbers ('1e5'), so a saved
    recipe.yaml reads back as the same recipe."""
    import yaml

    class RecipeDumper(yaml.SafeDumper):
        pass

    RecipeDumper.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789"))
    return RecipeDumper


class DuplicateKey(Exception):
    def __init__(self, key, first: int, again: int):
        super().__init__(f"key '{key}' appears twice (lines {first} and {again})")
        self.key, self.first, self.again = key, first, again


def yaml_load(text: str):
    """Parse recipe YAML: safe tags only, no duplicate keys, 1e-3 is a float."""
    import yaml

    return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass


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
                data = yaml_load(path.read_text()) or {}
            except (yaml.YAMLError, DuplicateKey):
                data = {"method": "?(invalid YAML)"}
            if not isinstance(data, dict):
                data = {"method": "?(not a mapping)"}
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
        value = yaml_load(raw) if raw.strip() else ""
    except DuplicateKey as e:
        raise UsageError(f"override '{text}': {e}") from None
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
        data = yaml_load(source.read_text())
    except DuplicateKey as e:
        raise UsageError(f"recipe {name}: key '{e.key}' is given twice, at lines {e.first} and {e.again}; "
                         "keep one (YAML would silently use the last)") from None
    except UnicodeDecodeError:
        raise UsageError(f"recipe {name} is not a text file (not UTF-8); pass a YAML recipe") from None
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
    written_for = (data.get("data") or {}).get("dataset") if isinstance(data.get("data"), dict) else None
    apply_overrides(data, overrides)
    now = (data.get("data") or {}).get("dataset") if isinstance(data.get("data"), dict) else None
    if written_for is not None and now != written_for:
        data.pop("expect", None)  # the recipe's expected number is for its own dataset, not this one
    if data.get("method") != method.name:
        raise UsageError("the 'method' key cannot be overridden; choose the method on the command line")
    schema = method.recipe_model()
    try:
        recipe = schema.model_validate(data)
    except ValidationError as e:
        options = {"seed": "seed", **{o.key: name for name, o in (getattr(method, "options", None) or {}).items()}}
        raise UsageError(format_validation_error(e, schema, ref, options)) from None
    return recipe, dump(recipe)


def dump(recipe) -> str:
    import yaml

    return yaml.dump(recipe.model_dump(mode="json"), Dumper=_dumper(), sort_keys=False)


def recipe_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _field_at(schema, path):
    """The FieldInfo at dotted ``path`` of a (nested) schema, or None if the path leaves it."""
    model, field = schema, None
    for part in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _section_type(field.annotation)
    return field


def _fields_at(schema, path) -> list[str] | None:
    """The valid keys of the (nested) section at ``path``, or None if the path leaves the schema."""
    model = schema
    if path:
        field = _field_at(schema, path)
        model = _section_type(field.annotation) if field is not None else None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return None


def _section_type(annotation):
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def numeric_bounds(annotation, metadata=()) -> list[tuple[type, dict]]:
    """(int or float, {"ge"/"gt"/"le"/"lt": value}) for every number an annotation can hold,
    looking through Optional, unions, lists and Annotated (bool is not a number here)."""
    found = []
    if typing.get_origin(annotation) is Annotated:
        base, *extra = typing.get_args(annotation)
        more = [m for e in extra for m in (getattr(e, "metadata", None) or [e])]
        return numeric_bounds(base, [*metadata, *more])
    if annotation in (int, float):
        bounds = {}
        for m in metadata:
            for name in ("ge", "gt", "le", "lt"):
                if getattr(m, name, None) is not None:
                    bounds[name] = getattr(m, name)
        return [(annotation, bounds)]
    for arg in typing.get_args(annotation):
        if arg is not type(None) and not isinstance(arg, (str, int, float)):  # skip Literal values
            found += numeric_bounds(arg)
    return found


def describe_range(kind: type, bounds: dict) -> str:
    """'an integer from 1 to 10000000', 'a number > 0 and <= 10', ..."""
    what = "an integer" if kind is int else "a number"

    def num(v):
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e16 else f"{v:g}"

    lo = ("ge", bounds["ge"]) if "ge" in bounds else ("gt", bounds["gt"]) if "gt" in bounds else None
    hi = ("le", bounds["le"]) if "le" in bounds else ("lt", bounds["lt"]) if "lt" in bounds else None
    if lo and hi and lo[0] == "ge" and hi[0] == "le":
        return f"{what} from {num(lo[1])} to {num(hi[1])}"
    parts = [f"{'>=' if k == 'ge' else '>' if k == 'gt' else '<=' if k == 'le' else '<'} {num(v)}"
             for k, v in (lo, hi) if k]
    return f"{what} {' and '.join(parts)}" if parts else what


NUMBER_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "int_type", "int_parsing",
                 "int_from_float", "float_type", "float_parsing", "finite_number"}


def format_validation_error(err: ValidationError, schema, ref, options: dict | None = None) -> str:
    """One line for the first problem: the key (and the option that set it), what is wrong, and the
    valid keys or the valid range there."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"] if not isinstance(p, int)]
    key = ".".join(loc)
    origin = f" in recipe {ref}" if ref else ""
    option = (options or {}).get(key)
    named = f"recipe key '{key}'" + (f" (--{option})" if option else "")
    if first["type"] == "extra_forbidden":
        valid = _fields_at(schema, loc[:-1]) or []
        close = difflib.get_close_matches(loc[-1], valid, n=1)
        hint = f" (did you mean '{'.'.join(loc[:-1] + [close[0]])}'?)" if close else ""
        where = f" under '{'.'.join(loc[:-1])}'" if loc[:-1] else ""
        return f"unknown recipe key '{key}'{origin}{hint}; valid keys{where}: {', '.join(valid)}"
    if first["type"] == "missing":
        return f"{named} is required{origin}"
    got = first.get("input")
    shown = repr(got) if not isinstance(got, dict) else "a mapping"
    field = _field_at(schema, loc)
    numbers = numeric_bounds(field.annotation, field.metadata) if field is not None else []
    if numbers and (first["type"] in NUMBER_ERRORS or (first["type"] == "value_error" and isinstance(got, bool))):
        kind, bounds = numbers[0]
        element = " each element" if isinstance(first["loc"][-1], int) else ""
        return f"{named}{origin}:{element} must be {describe_range(kind, bounds)} (got {shown})"
    if first["type"] == "literal_error" and isinstance(got, str):
        # one of a fixed set (a loss, a schedule kind): name the closest
        valid = [str(v) for v in first.get("ctx", {}).get("expected", "").replace("'", "").replace(" or ", ", ").split(", ")]
        close = difflib.get_close_matches(got, valid, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{named}{origin}: {first['msg']} (got {shown}){hint}"
    return f"{named}{origin}: {first['msg'].removeprefix('Value error, ')} (got {shown})"
