"""One directory per run: resolved recipe, run.json, metrics.jsonl, checkpoints, artifacts, images.

Also owns what every run needs the same way: seeding and named random generators, device choice,
the progress bar, NaN checks, and checkpoint/resume (atomic, no pickle).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__, locks
from .errors import CheckpointError, NonFiniteLoss, RunError, UsageError
from .state import atomic_write_text, load_state, remove_stale_temporaries, save_state

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT = f"{CHECKPOINT_DIR}/state.safetensors"


def toolbox_home() -> Path:
    if os.environ.get("TOOLBOX_HOME"):
        return Path(os.environ["TOOLBOX_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "toolbox"


def resolve_device(spec: str | None):
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; anything else is a usage error."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UsageError(f"device '{spec}' requested but CUDA is not available here; use --device cpu or auto")
        index = int(spec[5:]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"device '{spec}' does not exist: {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device(spec)
    raise UsageError(f"unknown device '{spec}'; use auto, cpu, cuda or cuda:N")


def _seed_for(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class Progress:
    """A rich progress bar whose description carries the latest logged metrics (marked as such: the
    run's reported numbers are the final ones, printed in its summary). The time remaining comes from
    the pace since the bar started, not rich's default 30-second window, which on a shared machine
    made the estimate jump (0:22 -> 0:59 -> 1:56 -> 0:09)."""

    def __init__(self, total: int, description: str, start: int = 0, shown: bool = True):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"),
            disable=not shown or os.environ.get("TOOLBOX_NO_PROGRESS") == "1", speed_estimate_period=24 * 3600,
        )
        self._task = self._bar.add_task(description, total=total, completed=start, metrics="")

    def update(self, advance: int = 1, **metrics: float) -> None:
        fields = {}
        if metrics:
            fields["metrics"] = "latest " + "  ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
        self._bar.update(self._task, advance=advance, **fields)

    def __enter__(self):
        self._bar.start()
        return self

    def __exit__(self, *exc):
        self._bar.stop()


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class Run:
    """What a method sees of its run. See docs/core-api.md.

    ``main`` False: a rank other than 0 of a run on several processes (toolbox.distributed). It trains
    and restores like rank 0 but writes nothing, shows no progress and logs to no tracker: rank 0 holds
    the same state (every rank draws the same random numbers) and writes it for all."""

    def __init__(self, dir: Path, recipe, method: str, verb: str, device, resumed: bool = False, main: bool = True):
        import numpy as np
        import torch

        self.dir = Path(dir)
        self.recipe = recipe
        self.method = method
        self.verb = verb
        self.device = device
        self.seed = int(recipe.seed)
        self.resumed = resumed
        self.main = main
        self._generators: dict[str, Any] = {}
        self._start = time.time()
        self._nested = 0.0  # seconds spent in nested runs (a default teacher), not this run's own time
        self._sinks: dict[str, Any] = {}  # --log trackers, mirrors of metrics.jsonl
        torch.manual_seed(self.seed)
        random.seed(self.seed)
        np.random.seed(self.seed % (2**32))

    # --- randomness ---------------------------------------------------------------------------
    def generator(self, name: str, device=None):
        """A torch.Generator seeded from (seed, name); saved and restored with checkpoints."""
        import torch

        device = torch.device(device or "cpu")
        key = f"{name}@{device}"
        if key not in self._generators:
            g = torch.Generator(device=device)
            g.manual_seed(_seed_for(self.seed, name))
            self._generators[key] = g
        return self._generators[key]

    def _rng_state(self) -> dict:
        import torch

        state = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "generators": {k: g.get_state() for k, g in self._generators.items()},
        }
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore_rng(self, state: dict) -> None:
        import torch

        torch.set_rng_state(state["torch"])
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        for key, s in state["generators"].items():
            name, _, dev = key.rpartition("@")
            self.generator(name, dev).set_state(s)
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)

    @contextlib.contextmanager
    def nested(self):
        """Time inside this block (another run this one needs, made or reused) is not this run's."""
        t0 = time.time()
        try:
            yield
        finally:
            self._nested += time.time() - t0

    # --- metrics and progress ----------------------------------------------------------------
    def log(self, step: int, **metrics) -> None:
        if not self.main:
            return
        line = {"step": int(step), "time": round(time.time() - self._start - self._nested, 3)}
        line.update({k: _jsonable(v) for k, v in metrics.items()})
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        for name, sink in list(self._sinks.items()):
            try:
                sink.log(int(step), line)
            except Exception as e:  # a tracker that fails (server gone) must not end a run whose metrics are on disk
                del self._sinks[name]
                print(f"warning: --log {name} stopped ({type(e).__name__}: {e}); metrics.jsonl has every value",
                      file=sys.stderr, flush=True)

    def open_loggers(self, names) -> None:
        """Start the --log sinks (recorded in run.json, so --resume reopens them)."""
        from .registry import current, resolve

        if not self.main:
            return
        info = json.loads((self.dir / "run.json").read_text())
        for name in names:
            logger = current().logger(name)
            sink = resolve(logger.open)(self.dir, info)
            self._sinks[name] = sink
            self.record(loggers=list(self._sinks), **(sink.record() if hasattr(sink, "record") else {}))

    def end(self, status: str) -> None:
        """Close the trackers and set run.json's status (rank 0's job)."""
        if self.main:
            self.close_loggers(status)
            _set_status(self.dir, status)

    def close_loggers(self, status: str) -> None:
        for name, sink in list(self._sinks.items()):
            try:
                sink.close(status)
            except Exception as e:  # as in log: the run's own files are complete
                print(f"warning: closing --log {name} failed ({type(e).__name__}: {e})", file=sys.stderr, flush=True)
        self._sinks.clear()

    def progress(self, total: int, description: str, start: int = 0) -> Progress:
        return Progress(total, description, start, shown=self.main)

    def check_finite(self, loss, step: int) -> None:
        value = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
        if value != value or value in (float("inf"), float("-inf")):
            ckpt = self.dir / CHECKPOINT
            kept = f"the last checkpoint is kept: fix the recipe (e.g. a lower learning rate) and continue with --resume {self.dir}" \
                if ckpt.exists() else "no checkpoint was written yet: lower the learning rate and start again"
            raise NonFiniteLoss(f"loss became {value} at step {step}; {kept}")

    # --- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self, state: dict, step: int) -> None:
        if not self.main:
            return
        save_state(self.dir / CHECKPOINT, {"step": int(step), "state": state, "rng": self._rng_state()})

    def checkpoint_step(self) -> int | None:
        """The step of a resumed run's checkpoint, read without restoring anything; None for a fresh run
        or one killed before its first checkpoint."""
        path = self.dir / CHECKPOINT
        if not self.resumed or not path.exists():
            return None
        return int(load_state(path, tensors=False)["step"])

    def load_checkpoint(self) -> dict | None:
        path = self.dir / CHECKPOINT
        if not self.resumed:
            return None
        if not path.exists():
            # killed before its first checkpoint: the run starts over, so its earlier lines go too
            self._truncate_metrics(0)
            return None
        saved = load_state(path)
        self._restore_rng(saved["rng"])
        state = saved["state"]
        state["step"] = saved["step"]
        self._truncate_metrics(saved["step"])
        return state

    def restore(self, state: dict | None = None, /, **targets) -> int:
        """Continue a resumed run: load the last checkpoint's entry of each keyword into its target (a
        module, optimizer, scheduler or grad scaler through ``load_state_dict``, a tensor copied in place,
        a dict updated in place; None skipped), under the names ``save_checkpoint({name: ..., ...}, step)``
        used, and return the step to start from: 0 on a fresh run or one without a checkpoint yet.

        Without ``state`` it reads the checkpoint itself, loads every target, drops later metrics.jsonl
        lines and restores the random generators LAST. With ``state`` (what ``load_checkpoint()``
        returned, the generators already restored) it only loads the targets.

        The rule that makes resume exact: call it once, after everything that draws random numbers
        while being built (models and their initialisation, data sources, augmenters) exists, and
        immediately before the first training step. Any draw from the global RNG between this call and
        the first step (a model built afterwards, a stray ``torch.rand``) shifts every later draw and
        silently breaks exact resume. ``toolbox.engine.Engine.fit`` calls it at that point.
        """
        if state is not None:
            return self._load_targets(state, targets)
        path = self.dir / CHECKPOINT
        if not self.resumed:
            return 0
        if not path.exists():
            self._truncate_metrics(0)  # killed before its first checkpoint: the run starts over
            return 0
        saved = load_state(path)
        saved["state"]["step"] = saved["step"]
        step = self._load_targets(saved["state"], targets)
        self._truncate_metrics(step)
        self._restore_rng(saved["rng"])  # last: see the rule above
        return step

    def _load_targets(self, state: dict, targets: dict) -> int:
        """A checkpoint that does not fit what the recipe built is one CheckpointError sentence."""
        import torch

        for name, target in targets.items():
            if target is None:
                continue
            if name not in state:
                self._mismatch(f"it holds no '{name}'")
            saved = state[name]
            if isinstance(target, torch.Tensor):
                if tuple(saved.shape) != tuple(target.shape):
                    self._mismatch(f"'{name}' is {list(saved.shape)} in the checkpoint but {list(target.shape)} "
                                   "in what the recipe builds")
                with torch.no_grad():
                    target.copy_(saved.to(target.device))
                continue
            if isinstance(target, dict):
                target.update(saved)
                continue
            if isinstance(target, torch.nn.Module):
                self._check_module(name, target.state_dict(), saved)
            try:
                target.load_state_dict(saved)
            except (RuntimeError, ValueError, KeyError, IndexError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                self._mismatch(f"'{name}' does not load ({first.rstrip('.:')})")
        return int(state["step"])

    def _check_module(self, name: str, current: dict, saved: dict) -> None:
        missing = [k for k in current if k not in saved]
        extra = [k for k in saved if k not in current]
        shapes = [k for k in current if k in saved and tuple(current[k].shape) != tuple(saved[k].shape)]

        def some(keys):
            return ", ".join(keys[:2]) + (f" and {len(keys) - 2} more" if len(keys) > 2 else "")

        if missing or extra:
            parts = ([f"lacks {some(missing)}"] if missing else []) + ([f"has extra {some(extra)}"] if extra else [])
            self._mismatch(f"'{name}' in the checkpoint {' and '.join(parts)} compared with the model the recipe builds")
        if shapes:
            k = shapes[0]
            more = f" ({len(shapes) - 1} more tensors differ)" if len(shapes) > 1 else ""
            self._mismatch(f"'{name}' {k} is {list(saved[k].shape)} in the checkpoint but {list(current[k].shape)} "
                           f"in the model the recipe builds{more}")

    def _mismatch(self, what: str):
        raise CheckpointError(f"the checkpoint in {self.dir / CHECKPOINT_DIR} does not fit this run: {what}; "
                              f"{self.dir / 'recipe.yaml'} or the checkpoint changed since it was written: "
                              "restore the recipe the run started with, or start a new run")

    def _truncate_metrics(self, step: int) -> None:
        if not self.main:
            return
        path = self.dir / "metrics.jsonl"
        if not path.exists():
            return
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        atomic_write_text(path, "".join(ln + "\n" for ln in keep))

    # --- artifacts ----------------------------------------------------------------------------
    def save_model(self, model, *, arch: str, arch_kwargs: dict, dataset, metrics: dict | None = None,
                   extra: dict | None = None, prefix: str = "model") -> Path:
        from .artifacts import save_model

        if not self.main:
            return self.dir / prefix
        info = json.loads((self.dir / "run.json").read_text())
        return save_model(self.dir, model, arch=arch, arch_kwargs=arch_kwargs, dataset=dataset,
                          method=self.method, metrics=metrics, extra=extra, prefix=prefix,
                          provenance={k: info.get(k) for k in ("plugin", "distribution", "plugin_version",
                                                                   "toolbox_version", "recipe_hash")})

    def save_images(self, name: str, images, *, mean, std, nrow: int | None = None, labels: list[str] | None = None,
                    title: str | None = None) -> Path:
        """images/<name>.png; ``labels`` under each tile and a ``title`` make it a labelled figure."""
        from .images import save_grid

        if not self.main:
            return self.dir / "images" / f"{name}.png"
        return save_grid(self.dir / "images" / f"{name}.png", images, mean=mean, std=std, nrow=nrow, labels=labels,
                         title=title)

    def save_figure(self, name: str, fig) -> Path:
        path = self.dir / "images" / f"{name}.png"
        if not self.main:
            return path
        path.parent.mkdir(exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        return path

    def record(self, **info) -> None:
        if not self.main:
            return
        path = self.dir / "run.json"
        data = json.loads(path.read_text())
        data.setdefault("records", {}).update({k: _jsonable(v) for k, v in info.items()})
        atomic_write_text(path, json.dumps(data, indent=2))


def _jsonable(v):
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    if isinstance(v, Path):
        return str(v)
    return v


# --- executing a method ------------------------------------------------------------------------


def _default_dir(verb: str, method: str, recipe) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    dataset = getattr(getattr(recipe, "data", None), "dataset", None)
    if dataset:
        from .data.refs import slug

        dataset = slug(dataset)  # a folder or Hub reference: its last part, not a path
    base = Path("runs") / "-".join(x for x in (verb, method, dataset, stamp) if x)
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def execute(verb: str, method_name: str, recipe_ref: str | None = None, overrides=(), out: str | Path | None = None,
            device: str | None = "auto", resume: str | Path | None = None, log=()) -> tuple[Path, dict]:
    """Run ``method_name`` through ``verb`` (train/distill/condense) and return (run dir, final metrics).

    With ``resume``, the run's saved verb and method must match ``verb`` and ``method_name`` (empty: any
    method). The process holds the run directory's lock (toolbox.locks) for as long as it writes it.
    Started by torchrun as one of several ranks (toolbox.distributed), every rank runs the method and
    rank 0 alone decides the run directory, holds its lock and writes it.
    """
    from . import distributed, plugins, recipes

    pm = plugins.load()
    for name in log:
        pm.registry.logger(name)  # an unknown tracker is refused before anything is written
    if resume is not None:
        run_dir = Path(resume)
        info = _resumable_info(run_dir, verb, method_name)
        verb, method_name = info["verb"], info["method"]
        method = pm.registry.method(method_name, verb)
        log = list(dict.fromkeys([*((info.get("records") or {}).get("loggers") or []), *log]))
        text = (run_dir / "recipe.yaml").read_text() if (run_dir / "recipe.yaml").exists() else ""
    else:
        method = pm.registry.method(method_name, verb)
        recipe, text = recipes.load_recipe(method, recipe_ref, overrides)
        run_dir = Path(out) if out else _default_dir(verb, method_name, recipe)
        if distributed.is_main():
            check_new_run_dir(run_dir)
    dev = distributed.init(resolve_device(device))
    world = distributed.world()
    if world > 1:
        distributed.check_same("recipe", recipes.recipe_hash(text))
        distributed.check_same("toolbox and plugin versions",
                               repr([__version__, sorted((p.name, p.version) for p in pm.loaded)]))
    main = distributed.is_main()
    with contextlib.ExitStack() as held:
        def prepare() -> str:
            """Rank 0's part: take the folder's lock and write (or check) what starts the run."""
            run_dir.mkdir(parents=True, exist_ok=True)
            held.enter_context(locks.hold(run_dir))
            if resume is not None:
                _resumable_info(run_dir, verb, method_name)  # again: it may have finished while we looked
                # a process killed while writing a file atomically leaves its temporary copy
                for folder in (run_dir, run_dir / CHECKPOINT_DIR):
                    remove_stale_temporaries(folder)
            else:
                check_new_run_dir(run_dir)  # again: another process may have started a run here meanwhile
                atomic_write_text(run_dir / "recipe.yaml", text)
                plugin = pm.plugin_info(method.plugin)
                atomic_write_text(run_dir / "run.json", json.dumps({
                    "method": method_name, "verb": verb, "plugin": method.plugin,
                    "distribution": plugin.dist if plugin else None,
                    "plugin_version": plugin.version if plugin else None, "toolbox_version": __version__,
                    "seed": recipe.seed, "device": str(dev), "command": sys.argv,
                    "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "recipe_hash": recipes.recipe_hash(text), "status": "running",
                }, indent=2))
            _set_status(run_dir, "running", device=str(dev), world_size=world)
            return str(run_dir)

        run_dir = Path(distributed.from_main(prepare))
        if main:
            from .launch import note_run_dir

            note_run_dir(run_dir)
        if resume is not None:
            recipe, _ = recipes.load_recipe(method, str(run_dir / "recipe.yaml"), ())
        run = Run(run_dir, recipe, method_name, verb, dev, resumed=resume is not None, main=main)
        if world > 1:  # which process is which rank: to follow or stop one
            import socket

            ranks = distributed.gather_objects({"host": socket.gethostname(), "pid": os.getpid(), "device": str(dev)})
            run.record(ranks=[{"rank": r, **v} for r, v in enumerate(ranks)])
        run.open_loggers(log)
        token = _CURRENT.set(run)
        try:
            metrics = pm.call(verb, method, recipe=recipe, run=run)
        except KeyboardInterrupt:
            run.end("interrupted")
            raise RunError(f"interrupted; continue from the last checkpoint with: toolbox {verb} --resume {run_dir}") from None
        except BaseException:
            run.end("failed")
            raise
        finally:
            _CURRENT.reset(token)
        metrics = {k: _jsonable(v) for k, v in (metrics or {}).items()}
        if main:
            atomic_write_text(run_dir / "summary.json", json.dumps(metrics, indent=2))
            from .curves import write_curves

            write_curves(run_dir, getattr(recipe, "expect", None), f"toolbox {verb} {method_name}: {run_dir.name}")
        run.end("finished")
    return run_dir, metrics


def _resumable_info(run_dir: Path, verb: str, method_name: str | None) -> dict:
    from .artifacts import read_run_json

    info = read_run_json(run_dir)
    made_by = f"toolbox {info['verb']} {info['method']}"
    if verb != info["verb"] or (method_name and method_name != info["method"]):
        typed = f"toolbox {verb} {method_name}".rstrip()
        raise UsageError(f"{run_dir} was made by `{made_by}`, not `{typed}`; "
                         f"continue it with: toolbox {info['verb']} --resume {run_dir}")
    if info.get("status") == "finished":
        raise UsageError(f"run {run_dir} already finished; nothing to resume")
    return info


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a run directory that would overwrite something: an existing run, a folder holding other
    files, the filesystem root, the home directory or a folder above the current one."""
    target = Path(run_dir).resolve()
    cwd = Path.cwd().resolve()
    danger = ("the filesystem root" if target == Path(target.anchor) else
              "your home directory" if target == Path.home().resolve() else
              "a folder above the current directory" if target in cwd.parents else None)
    if danger:
        raise UsageError(f"--out {run_dir} is {danger}; a run writes many files into its folder: "
                         "give a new or empty folder, e.g. --out runs/NAME")
    if (Path(run_dir) / "run.json").exists():
        raise UsageError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
    if not Path(run_dir).exists():
        return
    if not Path(run_dir).is_dir():
        raise UsageError(f"--out {run_dir} is a file, not a folder; give a new or empty folder")
    present = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(run_dir).iterdir() if p.name != locks.LOCK_NAME)
    if present:
        shown = ", ".join(present[:3]) + (f" and {len(present) - 3} more" if len(present) > 3 else "")
        raise UsageError(f"--out {run_dir} is not empty and holds no run ({shown}); a run would overwrite files "
                         "of the same names: give a new or empty folder")


def _set_status(run_dir: Path, status: str, **extra) -> None:
    path = run_dir / "run.json"
    data = json.loads(path.read_text())
    data.update(status=status, **extra)
    atomic_write_text(path, json.dumps(data, indent=2))


# the run whose method is executing in this thread, so that work nested in it (cached_run) can be
# kept off its clock
_CURRENT: contextvars.ContextVar[Run | None] = contextvars.ContextVar("toolbox_current_run", default=None)


def cached_run(verb: str, method: str, recipe: str | None = None, overrides=(), device: str | None = "auto",
               why: str = "", skip: str = "") -> Path:
    """Run a method once per resolved recipe and reuse the finished run (e.g. a default teacher).

    When it makes the run it says so in one line on stderr: what it runs, ``why`` the caller needs it, where it is
    cached, and ``skip`` (how to bring one's own instead). Time spent here is not the calling run's.
    Safe across processes: while another process makes the run, this one waits for it (saying so on
    stderr) and reuses the result; if that process died, this one continues its run with resume.
    """
    from . import plugins, recipes

    m = plugins.load().registry.method(method, verb)
    _, text = recipes.load_recipe(m, recipe, overrides)
    run_dir = toolbox_home() / "cache" / "runs" / f"{method}-{recipes.recipe_hash(text)[:16]}"
    what = f"{verb} {method}" + (f" -r {recipe}" if recipe else "") + "".join(f" -o {o}" for o in overrides)
    tail = "".join(f"; {t}" for t in (why, skip) if t)
    outer = _CURRENT.get()
    with outer.nested() if outer is not None else contextlib.nullcontext():
        if _finished(run_dir):  # reused silently: run.json records where it came from
            return run_dir
        return _make_cached(verb, method, recipe, overrides, device, run_dir,
                            f"running `toolbox {what}` once, cached in {run_dir} for later runs{tail}")


def _make_cached(verb: str, method: str, recipe, overrides, device, run_dir: Path, announcement: str) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)

    def announce(holder):
        print(f"waiting for {locks.describe(holder)}, which is making the cached {verb} {method} run {run_dir}",
              file=sys.stderr, flush=True)

    with locks.hold(run_dir, on_wait=announce):
        if _finished(run_dir):
            return run_dir
        print(announcement, file=sys.stderr, flush=True)
        # the nested run seeds the global RNGs; keep the caller's, so its results do not depend on
        # whether the cached run existed already
        with _preserved_rng():
            if (run_dir / "run.json").exists():
                return execute(verb, method, device=device, resume=run_dir)[0]
            # a start killed before run.json was written leaves at most its recipe.yaml: the folder is
            # the cache's own, so clear it rather than refuse it as "not empty"
            for leftover in run_dir.iterdir():
                if leftover.is_file() and leftover.name != locks.LOCK_NAME:
                    leftover.unlink()
            return execute(verb, method, recipe, overrides, out=run_dir, device=device)[0]


def _finished(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status") == "finished"
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def _preserved_rng():
    import numpy as np
    import torch

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


@contextlib.contextmanager
def threads(n: int | None):
    """Set torch's intra-op thread count for a block (small nets are often faster on one thread)."""
    import torch

    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
