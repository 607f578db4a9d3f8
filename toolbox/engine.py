"""The training loop every method runs: batches, optimiser steps, precision, checks, evaluation, resume.

A library the methods call, not a framework they subclass. A method builds its model, optimiser and
scheduler (``make_optimizer``/``make_scheduler`` read the recipe sections), hands the engine a batch
source and either a loss (``loss(model, x, y)``) or a whole step (``step(engine, x, y)``: SAM's two
passes), and the engine owns the rest::

    batches = make_batches(x, y, recipe.data, run.generator("data"), run.device)
    engine = Engine(run, model, opt, sched, speed=recipe.speed, loop=recipe.loop)
    metrics = engine.fit(batches, recipe.epochs, loss=ce, evaluate=test_accuracy, title="...")

The loop never waits for the device inside a step: losses stay on it and are read (and checked for
NaN/inf) once every ``loop.log_every`` steps and at the end of each epoch.

A method that trains helper models inside its own run (the condensation evaluator's fresh networks)
passes no run: ``Engine(None, model, opt, device=device, speed=resolved)`` trains the same way with
nothing recorded, restored, logged, shown or checkpointed.

Torch is imported inside the functions: recipe schemas import ``Loop`` without it.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import model_validator

from . import distributed
from .errors import UsageError
from .recipes import BatchSize, Count, Float, Int, Section


class Loop(Section):
    """The ``loop:`` recipe section. accumulate: micro-batches per optimiser step (their mean gradient);
    clip_norm: largest global gradient norm (off when unset); log_every: steps between reads of the loss."""

    accumulate: Int(1, 4096) = 1
    clip_norm: Float(gt=0, le=1e6) | None = None
    log_every: Count = 50


# --- batch sources ------------------------------------------------------------------------------


class _Batches:
    """What both batch sources count the same way: ``n`` samples cut into batches of ``batch``."""

    n: int
    batch: int

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch)

    def total(self, i: int) -> int:
        """The size of the epoch's ``i``-th batch over all ranks."""
        return min(self.batch, self.n - i * self.batch)


class TensorBatches(_Batches):
    """Shuffled mini-batches of in-memory tensors: one permutation of all samples per epoch, drawn from
    ``generator`` (a run generator, so resume continues its stream), cut into ``batch_size`` slices
    (the last one shorter).

    The engine needs only ``len(batches)`` (steps per epoch) and ``batches.epoch(e)`` (an iterable of
    (x, y)); LoaderBatches offers the same two and draws its order the same way.
    """

    def __init__(self, x, y, batch_size: int, generator, device):
        self.x, self.y = x.to(device), y.to(device)
        self.n = len(self.x)
        self.batch = min(batch_size, self.n)
        self.generator, self.device = generator, device

    def epoch(self, epoch: int, part=None):
        """The epoch's batches; with ``part`` (n -> slice, toolbox.distributed.share) each is this rank's
        slice of the batch all ranks drew together."""
        import torch

        order = torch.randperm(self.n, generator=self.generator, device=self.generator.device).to(self.device)
        for i in range(len(self)):
            idx = order[i * self.batch:(i + 1) * self.batch]
            if part is not None:
                idx = idx[part(len(idx))]
            yield self.x.index_select(0, idx), self.y.index_select(0, idx)  # x[idx]'s values, a fast gather


class LoaderBatches(_Batches):
    """Mini-batches of any map-style ``Dataset`` whose items are (x, y), through a ``DataLoader``: for data
    that does not fit in memory, or whose items are decoded by worker processes.

    The order is TensorBatches': one ``torch.randperm`` per epoch from ``generator``, drawn here in the
    main process and handed to the loader as its batches of indices. So resume is exact (the generator's
    state is what the checkpoint holds), workers draw nothing that decides the order, and over a
    ``TensorDataset`` the batches equal TensorBatches' with the same generator. Items must not draw random
    numbers in the workers (augment in the step, from a run generator). ``pin_memory`` applies on CUDA
    only, where the copy to the device then overlaps the step.
    """

    def __init__(self, dataset, batch_size: int, generator, device, *, num_workers: int = 0,
                 pin_memory: bool = True, prefetch_factor: int = 2, persistent_workers: bool = True):
        import torch

        self.n = len(dataset)
        self.batch = min(batch_size, self.n)
        self.generator, self.device = generator, torch.device(device)
        self.pinned = pin_memory and self.device.type == "cuda"
        self._order = _EpochOrder()
        # the loader draws its workers' base seed from this generator at every new iterator, from the
        # global RNG without one: that draw would shift the global stream that the methods use
        self._seeds = torch.Generator()
        workers = {"prefetch_factor": prefetch_factor, "persistent_workers": persistent_workers} if num_workers else {}
        self.loader = torch.utils.data.DataLoader(dataset, batch_sampler=self._order, num_workers=num_workers,
                                                  pin_memory=self.pinned, generator=self._seeds, **workers)

    def epoch(self, epoch: int, part=None):
        """As TensorBatches.epoch: ``part`` makes each batch this rank's slice, and only it is loaded."""
        import torch

        order = torch.randperm(self.n, generator=self.generator)
        batches = [order[i * self.batch:(i + 1) * self.batch] for i in range(len(self))]
        self._order.batches = [(b[part(len(b))] if part is not None else b).tolist() for b in batches]
        # workers are seeded as they start (once, when persistent) from this, not from any run stream
        self._seeds.manual_seed(self.generator.initial_seed() + epoch)
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=self.pinned), y.to(self.device, non_blocking=self.pinned)


class _EpochOrder:
    """The loader's batch sampler: the index batches LoaderBatches.epoch set for the current epoch."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class BatchSource(Section):
    """The keys of a ``data:`` section that choose how its batches are made (``make_batches``).
    loader: ``memory`` keeps the whole split on the device and gathers each batch there (TensorBatches);
    ``stream`` feeds it through a DataLoader (LoaderBatches) with ``workers`` worker processes."""

    batch_size: BatchSize = 64
    loader: Literal["memory", "stream"] = "memory"
    workers: Int(0, 256) = 0

    @model_validator(mode="after")
    def _workers_need_a_stream(self):
        if self.workers and self.loader == "memory":
            raise UsageError(f"data.workers={self.workers} needs data.loader=stream (memory batches are gathered "
                             "on the device, without workers); set data.loader=stream or data.workers=0")
        return self


def make_batches(x, y, data: BatchSource, generator, device):
    """The batch source ``data`` (a BatchSource section) selects over the tensors ``x``, ``y``; ``x`` may
    instead be a map-style dataset of (x, y) streamed from disk (``streamed`` true: a folder or Hub
    dataset larger than the memory budget, toolbox.data.sources.StreamedImages), fed through LoaderBatches
    whatever data.loader says."""
    if getattr(x, "streamed", False):
        return LoaderBatches(x.with_labels(y), data.batch_size, generator, device, num_workers=getattr(data, "workers", 0))
    if data.loader == "memory":
        return TensorBatches(x, y, data.batch_size, generator, device)
    import torch

    return LoaderBatches(torch.utils.data.TensorDataset(x, y), data.batch_size, generator, device,
                         num_workers=data.workers)


# --- optimiser and schedule from recipe sections -------------------------------------------------


def make_optimizer(params, optim):
    """SGD from an ``optim:`` section (lr, momentum, weight_decay, optional nesterov). foreach: one call
    per update op for all parameters instead of a Python loop over them (the same arithmetic per element,
    so the same weights; the CPU default is the loop)."""
    import torch

    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
                           nesterov=getattr(optim, "nesterov", False), foreach=True)


def optimizer_steps(batches_per_epoch: int, accumulate: int = 1) -> int:
    """Optimiser steps per epoch: the last group of an epoch may hold fewer than ``accumulate`` batches."""
    return math.ceil(batches_per_epoch / accumulate)


def make_scheduler(optimizer, schedule, total_steps: int, steps_per_epoch: int):
    """The learning rate of every optimiser step, from a ``schedule:`` section (kind cosine | step |
    constant | file; milestones in epochs) or a bare kind name. Step once per optimiser step.

    torch's schedule classes, evaluated in closed form: their default recursive update multiplies the
    previous rate by a ratio and drifts by rounding (CosineAnnealingLR's rate differs in the last bits
    from 0.5 (1 + cos(pi t / T)) at almost every step), while the closed form gives step t the same
    rate however it was reached, resumed or not.
    """
    import torch

    sched = torch.optim.lr_scheduler
    kind = schedule if isinstance(schedule, str) else schedule.kind
    if kind == "cosine":
        return _closed_form(sched.CosineAnnealingLR)(optimizer, T_max=total_steps)
    if kind == "step":
        return _closed_form(sched.MultiStepLR)(optimizer, milestones=[m * steps_per_epoch for m in schedule.milestones],
                                               gamma=schedule.gamma)
    if kind == "file":
        # a table of rates over equal windows of training: no torch class holds a table, LambdaLR looks it up
        lrs = windowed_learning_rates(schedule.file)
        base = optimizer.param_groups[0]["lr"]
        if base <= 0:
            raise UsageError("schedule.kind=file scales optim.lr: set optim.lr to any positive value")
        return sched.LambdaLR(optimizer, lambda step: lrs[min(len(lrs) * step // total_steps, len(lrs) - 1)] / base)
    if kind == "constant":
        return _closed_form(sched.ConstantLR)(optimizer, factor=1.0, total_iters=0)
    raise UsageError(f"unknown schedule kind '{kind}'; use cosine, step, constant or file")


_CLOSED: dict = {}


def _closed_form(cls):
    """``cls`` whose every step uses its own ``_get_closed_form_lr`` (see make_scheduler)."""
    if cls not in _CLOSED:
        _CLOSED[cls] = type(cls.__name__, (cls,), {"get_lr": lambda self: self._get_closed_form_lr(),
                                                   "__doc__": f"{cls.__name__} in closed form."})
    return _CLOSED[cls]


def windowed_learning_rates(ref: str | None) -> list[float]:
    """The ``learning_rates`` list of a schedule file (or of a run directory's schedule.json)."""
    import json
    from pathlib import Path

    path = Path(ref or "")
    path = path / "schedule.json" if path.is_dir() else path
    if not ref or not path.is_file():
        raise UsageError(f"schedule.file '{ref}' is not a schedule.json or a run directory holding one")
    try:
        lrs = [float(v) for v in json.loads(path.read_text())["learning_rates"]]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path} has no usable 'learning_rates' list ({e})") from None
    if not lrs:
        raise UsageError(f"{path} lists no learning rates")
    return lrs


# --- the loop ------------------------------------------------------------------------------------


class Engine:
    """Trains ``model`` with ``optimizer`` (and ``scheduler``, stepped once per optimiser step) under the
    run's speed settings. ``engine.model`` is the module to save; ``engine.forward`` the one to call
    (compiled when ``speed.compile`` is on). A method's own step uses ``autocast()``, ``backward(loss)``,
    ``clip()`` and ``optimizer_step()`` so that precision, scaling and clipping stay the engine's.

    ``speed``: a recipe's ``speed`` section, resolved here for the device and recorded in run.json, or
    settings a method already resolved (``toolbox.speed.Resolved``), used as they are. ``run`` None:
    a helper model trained inside a method's run, on ``device`` (see the module docstring); its
    non-finite losses are no error, since the method reports what such a model reached."""

    def __init__(self, run, model, optimizer, scheduler=None, *, speed=None, loop: Loop | None = None, device=None,
                 extra: dict | None = None):
        from .speed import Resolved, resolve

        if run is None and device is None:
            raise TypeError("Engine without a run needs device=")
        self.run = run if run is not None else _NoRun(device)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        # modules a method trains beside the model (a distiller's regressor): checkpointed with it
        self.extra = dict(extra or {})
        self.loop = loop or Loop()
        self.speed = speed if isinstance(speed, Resolved) else resolve(speed, self.run.device)
        self.run.record(speed=self.speed.record())
        self.speed.layout(model)
        # several ranks: each computes its slice of every batch and DDP averages the gradients; a
        # helper model (no run) is trained whole by the rank that owns it
        self.parallel = run is not None and distributed.world() > 1
        if self.parallel:
            sync_bn = bool(getattr(getattr(run.recipe, "parallel", None), "sync_bn", False))
            self.run.record(world_size=distributed.world(), sync_bn=sync_bn)
            forward = distributed.wrap(model, sync_bn=sync_bn)
        else:
            forward = model
        self.forward = self.speed.maybe_compile(forward)
        self.scaler = self.speed.grad_scaler()
        self.weight = 1.0  # this rank's share of the current batch's mean (see distributed.weight)
        # on several ranks (rows, total): this rank's rows of the current batch and the batch's size over
        # all ranks, for a step that draws random numbers per sample (augmentation) to draw them for the
        # whole batch and keep its rows, as one process would draw them; None in a plain process
        self.share = None

    # --- pieces a method's own step calls --------------------------------------------------------
    def autocast(self):
        return self.speed.autocast()

    def backward(self, loss) -> None:
        """Backward of a batch-mean loss; on several ranks weighted so that DDP's mean of the ranks'
        gradients is the gradient of the mean over the whole batch."""
        if self.weight != 1.0:
            loss = loss * self.weight
        self.scaler.scale(loss).backward()

    def clip(self) -> None:
        """Clip the global gradient norm to ``loop.clip_norm`` (gradients unscaled first); off by default."""
        if self.loop.clip_norm is None:
            return
        import torch

        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.loop.clip_norm)

    def optimizer_step(self) -> None:
        self.clip()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    # --- checkpoint ------------------------------------------------------------------------------
    def _stateful(self) -> dict:
        parts = {"model": self.model, **self.extra, "optimizer": self.optimizer, "scheduler": self.scheduler}
        if self.scaler.is_enabled():
            parts["scaler"] = self.scaler
        return {k: v for k, v in parts.items() if v is not None}

    def state_dict(self) -> dict:
        return {k: v.state_dict() for k, v in self._stateful().items()}

    # --- training --------------------------------------------------------------------------------
    def fit(self, batches, epochs: int, *, loss=None, step=None, evaluate=None, eval_every: int = 1,
            checkpoint_every: int = 1, title: str = "training", first_epoch: int = 0,
            last_stage: bool = True, loss_key: str = "train_loss") -> dict:
        """Train for ``epochs`` (continuing a resumed run where its checkpoint ends); returns the last
        epoch's metrics: train_loss (mean batch loss), lr, and what ``evaluate(model)`` returned on the
        epochs it ran (every ``eval_every`` and the last). Checkpoints every ``checkpoint_every`` epochs.

        ``loss(model, x, y)`` -> the batch loss (run under autocast), or ``step(engine, x, y)`` -> the
        batch loss after the method updated the weights itself (it calls ``engine.optimizer_step()``
        or steps an optimiser wrapper such as SAM).

        Stages: a run that trains in stages (a distiller's pre-stage, then distillation) numbers its
        epochs on: a stage is epochs ``first_epoch`` .. ``epochs - 1``, and ends with a checkpoint when
        it is not the last. A checkpoint at step s belongs to the stage with first_epoch < s <= epochs:
        resumed, that stage restores it (and returns {} at once if s is its end), the stages before it
        are skipped (its checkpoint holds what they trained, every stage saving every module) and the
        ones after it start fresh. ``loss_key`` names a stage's loss in the metrics (e.g. "hint_loss"), so
        that its series does not read as the final objective's.
        """
        if (loss is None) == (step is None):
            raise TypeError("Engine.fit takes exactly one of loss= or step=")
        if step is not None and self.loop.accumulate > 1:
            raise UsageError(f"loop.accumulate={self.loop.accumulate} needs the engine's own step, and this method "
                             "supplies a whole step (e.g. SAM's two passes); set loop.accumulate=1")
        run, steps = self.run, len(batches)
        part = distributed.share if self.parallel else None
        if part and batches.total(steps - 1) < distributed.world():
            # a rank with no rows would average an empty batch: NaN, and NaN times its weight 0 is NaN
            raise UsageError(f"the last batch of every epoch holds {batches.total(steps - 1)} sample(s), fewer than the "
                             f"{distributed.world()} ranks, and each rank needs one; change the batch size so that at "
                             f"least {distributed.world()} remain, or use fewer ranks")
        # everything that draws random numbers at construction exists by now: restore is safe here
        staged = first_epoch > 0 or not last_stage
        saved = run.checkpoint_step() if staged else None
        if saved is None:  # a fresh run, or one killed before its first checkpoint: restore starts over
            start = run.restore(**self._stateful()) if first_epoch == 0 else first_epoch
        elif first_epoch < saved <= epochs:  # this stage's checkpoint (its last one if it had finished)
            start = run.restore(**self._stateful())
        else:  # a later stage starts fresh after an earlier one; an earlier one is skipped
            start = first_epoch if saved <= first_epoch else epochs
        metrics: dict = {}
        if start >= epochs:
            return metrics
        with run.progress(epochs - first_epoch, title, start=start - first_epoch) as bar:
            for epoch in range(start, epochs):
                self.model.train()
                losses: list[float] = []
                window: list = []
                for i, (x, y) in enumerate(batches.epoch(epoch, part) if part else batches.epoch(epoch)):
                    if part:
                        self.weight = distributed.weight(len(x), batches.total(i))
                        self.share = (part(batches.total(i)), batches.total(i))
                    if self.speed.channels_last and x.dim() == 4:
                        x = x.contiguous(memory_format=_channels_last())
                    if step is not None:
                        value = step(self, x, y)
                        self._schedule()
                    else:
                        value = self._loss_step(loss, x, y, i, steps)
                    # the rank's part of the batch mean: the ranks' parts sum to it
                    window.append(value.detach() * (self.weight / distributed.world()) if part else value.detach())
                    if len(window) == self.loop.log_every:
                        self._read(window, losses, epoch * steps + i + 1 - len(window), bar, loss_key)
                self._read(window, losses, epoch * steps + steps - len(window), bar, loss_key)
                metrics = {loss_key: sum(losses) / len(losses), "lr": self._lr()}
                if evaluate is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
                    # rank 0 evaluates the model every rank holds; the others get its numbers
                    metrics.update(distributed.from_main(lambda: evaluate(self.model)) if part else evaluate(self.model))
                run.log(epoch + 1, **metrics)
                bar.update(1, **{k: v for k, v in metrics.items() if k != "lr"})
                if ((epoch + 1) % checkpoint_every == 0 and epoch + 1 < epochs) or (epoch + 1 == epochs and not last_stage):
                    run.save_checkpoint(self.state_dict(), epoch + 1)
        return metrics

    def _loss_step(self, loss, x, y, i: int, steps: int):
        k = self.loop.accumulate
        first, group = i % k == 0, min(k, steps - i // k * k)  # the last group of an epoch may be short
        with self.autocast():
            value = loss(self.forward, x, y)
        if first:
            # after the forward, not before: the old gradients stay allocated through it and the new
            # ones take their freed blocks; freed before it, glibc hands large blocks back to the OS and
            # the backward faults fresh pages in (measured: 5-10 % more CPU time for the condensation
            # evaluator's stacked models, all of it system time)
            self.optimizer.zero_grad(set_to_none=True)
        self.backward(value / group if group > 1 else value)
        if (i + 1) % k == 0 or i + 1 == steps:
            self.optimizer_step()
            self._schedule()
        return value

    def _schedule(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def _lr(self) -> float:
        return self.scheduler.get_last_lr()[0] if self.scheduler is not None else self.optimizer.param_groups[0]["lr"]

    def _read(self, window: list, losses: list, first_step: int, bar, key: str = "train_loss") -> None:
        """One host read for a window of losses; a NaN/inf names the step that produced it."""
        if not window:
            return
        import torch

        stacked = torch.stack([v.float() for v in window])
        if self.parallel:
            import torch.distributed as dist

            dist.all_reduce(stacked)  # the parts of each step's batch mean, one collective per window
        values = stacked.tolist()
        window.clear()
        for j, v in enumerate(values):
            if not math.isfinite(v):
                self.run.check_finite(v, first_step + j)
        losses.extend(values)
        bar.update(0, **{key: sum(values) / len(values)})


class _NoRun:
    """The run of an engine given none: the device, and nothing kept."""

    def __init__(self, device):
        self.device = device

    def record(self, **info) -> None:
        pass

    def restore(self, **targets) -> int:
        return 0

    def checkpoint_step(self) -> None:
        return None

    def progress(self, total: int, description: str, start: int = 0):
        return _Unseen()

    def log(self, step: int, **metrics) -> None:
        pass

    def check_finite(self, loss, step: int) -> None:
        pass

    def save_checkpoint(self, state: dict, step: int) -> None:
        pass


class _Unseen:
    """A progress bar that shows nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, advance: int, **metrics) -> None:
        pass


def _channels_last():
    import torch

    return torch.channels_last
