"""Plugin discovery: entry points of group "toolbox", each loaded inside its own guard.

A plugin that fails to import, names a hook that does not exist, or raises while registering is
reported (``toolbox plugins``) and left out; every other plugin keeps working. ``TOOLBOX_STRICT=1``
turns those reports into errors with a traceback. ``TOOLBOX_LOAD_PLUGINS`` selects plugins:
unset = all, empty = none, a comma list = only those (a name no installed plugin has is warned about).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from . import DISTRIBUTION, hookspecs
from .errors import RunError, ToolboxError, UsageError
from .registry import VERBS, Registry, set_current

CORE = "toolbox"  # core's own registrations (datasets, architectures, recipes/) use this name


@dataclass
class PluginInfo:
    name: str
    dist: str | None
    version: str | None
    module: str
    hooks: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)


@dataclass
class PluginFailure:
    name: str
    dist: str | None
    version: str | None
    error: str


def strict() -> bool:
    return os.environ.get("TOOLBOX_STRICT", "") not in ("", "0", "false", "no")


def _selected() -> set[str] | None:
    value = os.environ.get("TOOLBOX_LOAD_PLUGINS")
    if value is None:
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


class Plugins:
    def __init__(self):
        self.pm = pluggy.PluginManager("toolbox")
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.loaded: list[PluginInfo] = []
        self.failed: list[PluginFailure] = []
        self.warnings: list[str] = []  # shown on stderr once, when the plugins are loaded for a command

    # --- loading ------------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        from . import builtins

        self._add(CORE, builtins, dist=DISTRIBUTION, version=None)
        wanted = _selected()
        available = sorted(entry_points(group="toolbox"), key=lambda e: e.name)
        unknown = sorted((wanted or set()) - {ep.name for ep in available})
        if unknown:  # a typo here would otherwise just empty the tables
            self.warnings.append(f"TOOLBOX_LOAD_PLUGINS names {', '.join(repr(n) for n in unknown)}, but no installed "
                                 f"plugin has {'that name' if len(unknown) == 1 else 'those names'}; installed: "
                                 f"{', '.join(ep.name for ep in available) or 'none'}")
        for ep in available:
            if wanted is not None and ep.name not in wanted:
                continue
            dist = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            try:
                module = ep.load()
            except Exception as e:
                self._fail(ep.name, dist, version, f"failed to import {ep.value}: {type(e).__name__}: {e}")
                continue
            self._add(ep.name, module, dist, version)
        self._register_all()

    def add_plugin(self, name: str, obj, dist: str | None = None, version: str | None = None) -> None:
        """Register an in-process plugin object (tests, embedding) and run its registrations."""
        if self._add(name, obj, dist, version):
            self._register_all(only=name)

    def _add(self, name, obj, dist, version) -> bool:
        if self.pm.has_plugin(name) or self.pm.is_registered(obj):
            self._fail(name, dist, version, f"a plugin named '{name}' is already loaded (duplicate entry point?)")
            return False
        try:
            self.pm.register(obj, name=name)
            self.pm.check_pending()  # a misspelled hook name is reported here, against this plugin
        except Exception as e:
            if self.pm.has_plugin(name):
                self.pm.unregister(name=name)
            msg = str(e).splitlines()[0]
            if isinstance(e, pluggy.PluginValidationError):
                msg = f"{msg}; known hooks: {', '.join(sorted(self.hook_names()))}"
            self._fail(name, dist, version, msg)
            return False
        hooks = sorted(h.name for h in self.pm.get_hookcallers(obj) or [])
        self.loaded.append(PluginInfo(name, dist, version, getattr(obj, "__name__", type(obj).__name__), hooks))
        return True

    def _fail(self, name, dist, version, error) -> None:
        failure = PluginFailure(name, dist, version, error)
        if strict():
            raise RuntimeError(format_failure(failure))
        self.failed.append(failure)

    def _register_all(self, only: str | None = None) -> None:
        kinds = [("register_recipes", lambda plugin: lambda root: self.registry.recipe_roots.append((plugin, root))),
                 ("register_datasets", lambda plugin: lambda ds: self.registry.add_dataset(ds, plugin)),
                 ("register_architectures", lambda plugin: lambda a: self.registry.add_architecture(a, plugin)),
                 ("register_loggers", lambda plugin: lambda lg: self.registry.add_logger(lg, plugin)),
                 ("register_methods", lambda plugin: lambda m: self.registry.add_method(m, plugin))]
        for hook, make_register in kinds:
            for impl in getattr(self.pm.hook, hook).get_hookimpls():  # registration order: core first
                if only is not None and impl.plugin_name != only:
                    continue
                if not self.pm.has_plugin(impl.plugin_name):
                    continue
                try:
                    impl.function(register=make_register(impl.plugin_name))
                except Exception as e:  # in strict mode _drop raises, chained to this traceback
                    self._drop(impl.plugin_name, f"{hook} raised {type(e).__name__}: {e}")
        for info in self.loaded:
            info.methods = sorted(m.name for m in self.registry.methods.values() if m.plugin == info.name)

    def _drop(self, name: str, error: str) -> None:
        info = self.plugin_info(name)
        self.pm.unregister(name=name)
        self.loaded = [p for p in self.loaded if p.name != name]
        for table in (self.registry.methods, self.registry.architectures, self.registry.datasets):
            for key in [k for k, v in table.items() if v.plugin == name]:
                del table[key]
        self.registry.recipe_roots = [(p, r) for p, r in self.registry.recipe_roots if p != name]
        self._fail(name, info.dist if info else None, info.version if info else None, error)

    # --- queries ------------------------------------------------------------------------------
    def hook_names(self) -> list[str]:
        return [name for name in dir(self.pm.hook) if not name.startswith("_")]

    def plugin_info(self, name: str) -> PluginInfo | None:
        return next((p for p in self.loaded if p.name == name), None)

    # --- dispatch -----------------------------------------------------------------------------
    def call(self, verb: str, method, **kwargs):
        """Call operation hook ``verb`` on the one plugin that registered ``method``."""
        assert verb in VERBS
        plugin = self.pm.get_plugin(method.plugin)
        impls = [i for i in getattr(self.pm.hook, verb).get_hookimpls() if i.plugin is plugin]
        if not impls:
            raise UsageError(f"plugin '{method.plugin}' registers method '{method.name}' for '{verb}' "
                             f"but implements no '{verb}' hook; report this to the plugin's author")
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        caller = self.pm.subset_hook_caller(verb, remove_plugins=others)
        try:
            return caller(method=method.name, **kwargs)
        except ToolboxError:
            raise
        except Exception as e:
            from .distributed import RankError, lost_peer

            if lost_peer(e):  # another rank died: its failure, not this plugin's, is the story
                raise RankError(f"lost another rank ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
            if strict():
                raise
            info = self.plugin_info(method.plugin)
            dist = f"{info.dist} {info.version}" if info and info.dist else "unknown distribution"
            raise RunError(f"plugin '{method.plugin}' ({dist}) crashed in {verb} '{method.name}': "
                           f"{type(e).__name__}: {e}") from e


_loaded: Plugins | None = None


def load(reload: bool = False) -> Plugins:
    global _loaded
    if _loaded is None or reload:
        plugins = Plugins()
        plugins.load_entry_points()
        for warning in plugins.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        _loaded = plugins
        set_current(plugins.registry)
    return _loaded


def reset() -> None:
    """Forget the loaded plugins (tests change TOOLBOX_LOAD_PLUGINS between cases)."""
    global _loaded
    _loaded = None
    set_current(None)


def format_failure(f: PluginFailure) -> str:
    return f"plugin '{f.name}' ({f.dist or 'unknown distribution'}{' ' + f.version if f.version else ''}): {f.error}"

