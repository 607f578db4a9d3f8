"""FDS as a toolbox run: outer loop over hyperparameters, checkpoint per outer step, final retraining."""

from __future__ import annotations

import json

import torch

from toolbox import data
from toolbox.errors import UsageError
from toolbox.evaluation import accuracy
from toolbox.models import build_for
from toolbox.speed import resolve

from .flatnet import FlatNet
from .forward_mode import Hypers, batches, hypergradient, unroll, validation_gradient
from .outer import SignSteps
from .recipe import EXACT
from .schedule import plot_schedules, write_schedule


def split_validation(n: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices) of the train split, seeded; both sorted."""
    perm = torch.randperm(n, generator=generator)
    n_val = max(1, round(fraction * n))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _net(recipe, spec, device, dtype) -> FlatNet:
    return FlatNet(lambda: build_for(recipe.model.arch, spec, **recipe.model.kwargs).to(device=device, dtype=dtype))


def _accuracy(net: FlatNet, w, x, y, batch_size: int = 1000) -> float:
    net.module.eval()
    with torch.no_grad():
        correct = sum(int((net(w, xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    net.module.train()
    return correct / len(y)


def _batches(idx, recipe, generator) -> list:
    """The inner loop's minibatches of ``idx`` (indices into the train split) for the whole horizon."""
    return [idx[b] for b in batches(len(idx), recipe.data.batch_size, recipe.inner_epochs, generator)]


def train_fds(recipe, run) -> dict:
    if recipe.inner_epochs < 1 or recipe.outer_steps < 1:
        raise UsageError("inner_epochs and outer_steps must be at least 1")
    speed = resolve(recipe.speed, run.device, exact=EXACT)
    run.record(speed=speed.record())
    real = data.load(recipe.data.dataset)
    spec, device = real.spec, run.device
    dtype = getattr(torch, recipe.dtype)
    x = real.normalize(real.train_x).to(device=device, dtype=dtype)
    y = real.train_y.to(device)
    test_x, test_y = real.normalize(real.test_x).to(device=device, dtype=dtype), real.test_y.to(device)
    train_idx, val_idx = split_validation(len(y), recipe.data.val_fraction, run.generator("validation-split"))
    (run.dir / "val_split.json").write_text(json.dumps({"seed": run.seed, "fraction": recipe.data.val_fraction,
                                                        "val_indices": val_idx.tolist()}))
    run.record(val_split={"file": "val_split.json", "of": f"{spec.name} train split", "train": len(train_idx),
                          "val": len(val_idx), "seed": run.seed})
    train_idx, val_idx = train_idx.to(device), val_idx.to(device)
    net = _net(recipe, spec, device, dtype)
    h = recipe.hyper
    K = h.num_lrs

    stepper = SignSteps.start([h.lr_init] * K + [h.momentum_init, h.weight_decay_init],
                              [h.lr_step] * K + [h.momentum_step, h.weight_decay_step], h.step_decay)
    history: list[dict] = []
    start, converged = 0, False
    state = run.load_checkpoint()
    if state is not None:
        stepper = SignSteps.from_state(state["stepper"])
        history, start, converged = list(state["history"]), state["step"], bool(state["converged"])
    run.record(parameters=net.num_params, tangent_shape=[net.num_params, K + 2])

    every = recipe.checkpoint_every or 1
    with run.progress(recipe.outer_steps, f"fds {recipe.model.arch} on {spec.name}", start=start) as bar:
        for outer in range(start, recipe.outer_steps):
            if converged:
                break
            hypers = Hypers.from_vector(stepper.values)
            w0 = net.fresh_init(run.generator("init"), dtype=dtype, device=device)
            unrolled = unroll(net, w0, hypers, x, y, _batches(train_idx, recipe, run.generator("data")),
                              grad_clamp=h.grad_clamp, hz_clamp=h.hz_clamp)
            hg = hypergradient(net, unrolled, x[val_idx], y[val_idx], recipe.data.val_batch_size)
            run.check_finite(hg.sum(), outer)
            _, val_loss = validation_gradient(net, unrolled.w, x[val_idx], y[val_idx], recipe.data.val_batch_size)
            entry = {"outer_step": outer + 1, "learning_rates": hypers.lrs, "momentum": hypers.momentum,
                     "weight_decay": hypers.weight_decay, "hypergradient": hg.tolist(),
                     "val_loss": float(val_loss), "val_accuracy": _accuracy(net, unrolled.w, x[val_idx], y[val_idx]),
                     "test_accuracy": _accuracy(net, unrolled.w, test_x, test_y)}
            converged = stepper.update(hg.tolist(), h.converged_fraction)
            history.append(entry)
            run.log(outer + 1, **{f"lr_{k}": v for k, v in enumerate(hypers.lrs)}, momentum=hypers.momentum,
                    weight_decay=hypers.weight_decay, val_loss=entry["val_loss"],
                    val_accuracy=entry["val_accuracy"], test_accuracy=entry["test_accuracy"], converged=converged)
            bar.update(1, val_acc=entry["val_accuracy"], lr_mean=sum(hypers.lrs) / K)
            if (outer + 1) % every == 0 or converged or outer + 1 == recipe.outer_steps:
                run.save_checkpoint({"stepper": stepper.state_dict(), "history": history, "converged": converged},
                                    outer + 1)

    learned = Hypers.from_vector(stepper.values)
    retrain_idx = torch.cat([train_idx, val_idx]) if recipe.data.retrain_on == "train+val" else train_idx
    w0 = net.fresh_init(run.generator("retrain-init"), dtype=dtype, device=device)
    final = unroll(net, w0, learned, x, y, _batches(retrain_idx, recipe, run.generator("retrain-data")),
                   grad_clamp=h.grad_clamp, hz_clamp=None, tangents=False)
    run.check_finite(final.w.sum(), len(history))
    model = net.as_module(final.w).float()
    test_acc = accuracy(model, real.test_x, real.test_y, mean=spec.mean, std=spec.std, device=device)
    schedule = {"learning_rates": learned.lrs, "momentum": learned.momentum, "weight_decay": learned.weight_decay}
    write_schedule(run.dir / "schedule.json", **schedule, dataset=spec.name, arch=recipe.model.arch,
                   inner_epochs=recipe.inner_epochs, batch_size=recipe.data.batch_size,
                   outer_steps=len(history), converged=converged, retrain_test_accuracy=test_acc, history=history)
    run.save_figure("schedule", plot_schedules(history, learned.lrs, learned.momentum, learned.weight_decay))
    metrics = {"accuracy": test_acc, "outer_steps": len(history), "converged": converged}
    run.log(len(history) + 1, retrain_test_accuracy=test_acc)
    run.save_model(model, arch=recipe.model.arch, arch_kwargs=recipe.model.kwargs, dataset=spec,
                   metrics={"accuracy": test_acc}, extra={"schedule": schedule, "schedule_file": "schedule.json"})
    return metrics

