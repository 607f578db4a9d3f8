"""Flat registries: names -> methods, architectures, datasets, recipe folders.

They are filled only through the plugins' register_* hooks, so core owns naming and collisions
(two plugins claiming one name is an error naming both), and lookups of unknown names fail with the
valid names and a "did you mean".
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

VERBS = ("train", "distill", "condense", "evaluate", "export")


@dataclass
class Option:
    """A method-specific command-line option mapped onto a recipe key.

    ``--dataset digits`` with Option("data.dataset") becomes the override data.dataset=digits.
    ``flag`` options take no value and set the key to True.
    """

    key: str
    help: str = ""
    flag: bool = False


@dataclass
class Method:
    """A method a plugin implements.

    name: what users type (``toolbox train <name>``).
    verbs: the operation hooks the plugin answers for this method.
    summary: one line for ``toolbox methods``.
    schema: the pydantic recipe model, a "package.module:Class" string, or a zero-argument callable
        returning it (the last two keep imports lazy).
    default_recipe: recipe name (see ``toolbox recipes``) or path used when no -r is given.
    options: extra CLI options (``--name value``) that are shortcuts for recipe keys.
    paper: citation shown in cards.
    metrics: a few words on what each final metric the method reports means (shown in the run's
    summary beside the value; toolbox.summary.COMMON covers accuracy, loss and the like).
    """

    name: str
    verbs: tuple[str, ...]
    summary: str
    schema: Any
    default_recipe: str | None = None
    options: dict[str, Option] = field(default_factory=dict)
    paper: str = ""
    metrics: dict[str, str] = field(default_factory=dict)
    # optional: (CLI option values, e.g. {"dataset": "cifar10", "ipc": "50"}) -> candidate recipe
    # names, best first; the first that exists is used, so `toolbox condense cifar10 --ipc 50`
    # starts from the matching paper recipe
    choose_recipe: Callable[[dict], list[str]] | None = None
    # its evaluate hook runs on every rank of `toolbox evaluate --nproc N` and shares the work out
    # itself (toolbox.distributed; rank 0 alone writes); otherwise rank 0 evaluates while the rest wait
    evaluate_on_ranks: bool = False
    plugin: str = ""  # filled in by the registry: the plugin that registered it

    def recipe_model(self):
        schema = resolve(self.schema)
        return schema if isinstance(schema, type) else schema()


def recipes_by_dataset_and_arch(prefix: str) -> Callable[[dict], list[str]]:
    """A ``choose_recipe`` for methods whose recipes are named ``<prefix>/<dataset>-<arch slug>``
    with ``<prefix>/<dataset>`` as the fallback: ``--dataset cifar10 --arch wrn-16-8`` picks
    ``<prefix>/cifar10-wrn16_8`` when it exists."""

    def choose(values: dict) -> list[str]:
        dataset = values.get("dataset", "digits")
        arch = values.get("arch")
        slug = arch.replace("wrn-", "wrn").replace("-", "_") if arch else None
        return ([f"{prefix}/{dataset}-{slug}"] if slug else []) + [f"{prefix}/{dataset}"]

    return choose


@dataclass
class Logger:
    """A metrics sink a run also writes to (``--log NAME``), beside metrics.jsonl, which stays the
    source of truth. ``open(run_dir, info)`` (callable or "module:function") returns an object with
    ``log(step, metrics)`` and ``close()``; ``info`` is run.json's content. ``install``: the pip
    requirement that brings what it needs, named when it is missing."""

    name: str
    open: Callable[..., Any] | str
    summary: str = ""
    install: str = ""
    plugin: str = ""


@dataclass
class Architecture:
    """A model constructor: ``build(num_classes=..., in_channels=..., image_size=..., **kwargs)``."""

    name: str
    build: Callable[..., Any] | str  # callable or "module:function", imported on first use
    summary: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)  # fixed constructor arguments for this name
    plugin: str = ""

    def __call__(self, **kwargs):
        return resolve(self.build)(**{**self.kwargs, **kwargs})


@dataclass
class DatasetSpec:
    """An image-classification dataset.

    load() -> (train_x, train_y, test_x, test_y): float32 [N, C, H, W] in [0, 1] and int64 [N].
    files: the file names that must be present in ``root/<folder>`` (for messages and ``present``).
    """

    name: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    load: Callable[..., Any] | str  # callable or "module:function", imported on first use
    summary: str = ""
    folder: str | None = None  # sub-folder of the data root; None = embedded, nothing on disk
    files: tuple[str, ...] = ()
    is_present: Callable[[], bool] | None = None
    location: Callable[[], str] | None = None
    plugin: str = ""
    classes: tuple[str, ...] = ()  # class names by label; empty: the labels' numbers
    # where the data came from, recorded in run.json: kind (builtin, folder, hub), path or repo, the
    # fingerprint of the files or the Hub commit, the split
    source: dict = field(default_factory=dict)

    def class_name(self, label: int) -> str:
        return self.classes[label] if label < len(self.classes) else str(label)

    def load_arrays(self):
        return resolve(self.load)()

    def present(self) -> bool:
        return True if self.is_present is None else bool(self.is_present())

    def where(self) -> str:
        return "embedded" if self.location is None else self.location()


class Registry:
    """One flat table per kind."""

    def __init__(self):
        self.methods: dict[str, Method] = {}
        self.architectures: dict[str, Architecture] = {}
        self.datasets: dict[str, DatasetSpec] = {}
        self.loggers: dict[str, Logger] = {}
        self.recipe_roots: list[tuple[str, Any]] = []  # (plugin, folder as Path or Traversable)
        # name -> message; a name claimed by two plugins is usable by neither (no silent override)
        self.conflicts: dict[str, str] = {}

    def _add(self, table: dict, kind: str, obj, plugin: str):
        obj.plugin = plugin
        key = f"{kind}:{obj.name}"
        if key in self.conflicts:
            return
        if obj.name in table and table[obj.name].plugin != plugin:
            first = table.pop(obj.name).plugin
            self.conflicts[key] = (
                f"{kind} '{obj.name}' is registered by two plugins, '{first}' and '{plugin}'; uninstall one "
                f"(toolbox uninstall ...) or select plugins with TOOLBOX_LOAD_PLUGINS"
            )
            return
        table[obj.name] = obj

    def add_method(self, method: Method, plugin: str):
        bad = [v for v in method.verbs if v not in VERBS]
        if bad:
            raise UsageError(f"method '{method.name}' from plugin '{plugin}' names unknown verbs {bad}; valid: {', '.join(VERBS)}")
        self._add(self.methods, "method", method, plugin)

    def add_architecture(self, arch: Architecture, plugin: str):
        self._add(self.architectures, "architecture", arch, plugin)

    def add_dataset(self, ds: DatasetSpec, plugin: str):
        self._add(self.datasets, "dataset", ds, plugin)

    def add_logger(self, logger: Logger, plugin: str):
        self._add(self.loggers, "logger", logger, plugin)

    def logger(self, name: str) -> Logger:
        return self._lookup(self.loggers, name, "logger")

    def method(self, name: str, verb: str | None = None) -> Method:
        m = self._lookup(self.methods, name, "method")
        if verb and verb not in m.verbs:
            able = sorted(n for n, x in self.methods.items() if verb in x.verbs)
            raise UsageError(f"method '{name}' does not support '{verb}' (it supports: {', '.join(m.verbs)}); "
                             f"methods for '{verb}': {', '.join(able) or 'none'}")
        return m

    def architecture(self, name: str) -> Architecture:
        return self._lookup(self.architectures, name, "architecture")

    def dataset(self, name: str) -> DatasetSpec:
        return self._lookup(self.datasets, name, "dataset")

    def _lookup(self, table: dict, name: str, kind: str):
        if f"{kind}:{name}" in self.conflicts:
            raise UsageError(self.conflicts[f"{kind}:{name}"])
        return _lookup(table, name, kind)

    def match_architectures(self, pattern: str = "*") -> list[Architecture]:
        return [a for n, a in sorted(self.architectures.items()) if fnmatch.fnmatch(n, pattern)]


def resolve(target):
    """A callable, or a "package.module:attribute" string imported on first use (keeps torch out of
    plugin loading)."""
    if not isinstance(target, str):
        return target
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


_current: Registry | None = None


def current() -> Registry:
    """The registry of the loaded plugins (loads them on first use)."""
    if _current is None:
        from . import plugins

        plugins.load()
    assert _current is not None
    return _current


def set_current(registry: Registry | None) -> None:
    global _current
    _current = registry


def _lookup(table: dict, name: str, kind: str):
    if name in table:
        return table[name]
    valid = sorted(table)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UsageError(f"unknown {kind} '{name}'{hint}; valid: {', '.join(valid) or 'none registered'}")
