"""Time supervised and KD digits epochs on the engine vs the loops it replaced.

The former loops (toolbox/classifier.py::fit and toolbox_kd/method.py::train_kd before the engine,
transcribed below) read the loss with ``loss.item()`` and ``run.check_finite`` after every step; the
engine keeps the losses on the device and reads them once per ``loop.log_every`` steps. Both sides train identically initialised networks
on the same draws (their weights are compared at the end), on one thread, alternating side by side in
this process, and pay for the same run bookkeeping (metrics.jsonl, progress bar, checkpoints).
Prints CPU-seconds per epoch of each part (supervised: an MLP; KD: KD+AT with crop augmentation,
WRN-16-1 teacher -> WRN-16-1 student on the full digits split) and ends with `speedup: <former / engine>`
of the part where the engine gains least, from the fastest repeat of each side (timeit's rule: on a
shared machine the slower repeats measure the neighbours, not the loop).

    python benchmarks/engine_step.py [--arch mlp] [--epochs 5] [--repeats 11] [--kd-epochs 2] [--kd-repeats 9] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from toolbox import data, engine
from toolbox.models import build_for
from toolbox.runs import Run


def make_run(root: Path, name: str, method: str = "supervised") -> Run:
    d = root / name
    d.mkdir()
    (d / "run.json").write_text("{}")
    return Run(d, SimpleNamespace(seed=0), method, "train", torch.device("cpu"))


def former_fit(run, model, opt, sched, train_x, train_y, epochs, batch):
    """The pre-engine classifier loop (no augmentation, no SAM, no evaluation: what both sides share)."""
    n = len(train_x)
    steps_per_epoch = math.ceil(n / batch)
    gen = run.generator("data")
    with run.progress(epochs, "former") as bar:
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(n, generator=gen)
            total_loss = 0.0
            for i in range(steps_per_epoch):
                idx = order[i * batch:(i + 1) * batch]
                loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
                run.check_finite(loss, epoch * steps_per_epoch + i)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_loss += loss.item()
            metrics = {"train_loss": total_loss / steps_per_epoch, "lr": sched.get_last_lr()[0]}
            run.log(epoch + 1, **metrics)
            bar.update(1, train_loss=metrics["train_loss"])
            if epoch + 1 < epochs:
                run.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict()}, epoch + 1)
    return metrics


def former_schedule(opt, total):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))


def setup(args, real, former: bool):
    torch.manual_seed(0)
    model = build_for(args.arch, real.spec)
    optim = SimpleNamespace(lr=0.1, momentum=0.9, weight_decay=5e-4)
    if former:
        opt = torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    else:
        opt = engine.make_optimizer(model.parameters(), optim)
    steps = math.ceil(len(real.train_y) / args.batch)
    total = steps * args.epochs
    sched = former_schedule(opt, total) if former else engine.make_scheduler(opt, "cosine", total, steps)
    return model, opt, sched


# --- KD ------------------------------------------------------------------------------------------


def kd_recipe():
    from toolbox_kd.recipe import KDRecipe

    from toolbox.recipes import apply_overrides

    return KDRecipe.model_validate(apply_overrides({"method": "kd"}, [
        "loss.kind=kd+at", "loss.at_weight=62.5", "data.augment=crop", "data.crop_padding=1"]))


def former_kd_fit(run, recipe, student, teacher, s_tap, t_tap, opt, sched, x_all, y_all, epochs):
    """The pre-engine KD loop (toolbox_kd/method.py::train_kd's epochs, evaluation left out on both sides)."""
    from toolbox_kd.method import kd_objective

    from toolbox.augment import random_crop_flip

    n, batch = len(x_all), min(recipe.data.batch_size, len(x_all))
    steps = math.ceil(n / batch)
    order_gen, aug_gen = run.generator("order"), run.generator("augment")
    with run.progress(epochs, "former kd") as bar:
        for epoch in range(epochs):
            student.train()
            order = torch.randperm(n, generator=order_gen)
            total = 0.0
            for i in range(steps):
                idx = order[i * batch:(i + 1) * batch]
                x, y = x_all[idx], y_all[idx]
                x = random_crop_flip(x, recipe.data.crop_padding, recipe.data.augment == "crop_flip", aug_gen)
                with torch.no_grad():
                    t_logits, t_feats = t_tap(teacher, x)
                s_logits, s_feats = s_tap(student, x)
                loss = kd_objective(recipe.loss, s_logits, y, t_logits, s_feats, t_feats)
                run.check_finite(loss, epoch * steps + i)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item()
            sched.step()
            metrics = {"loss": total / steps, "lr": sched.get_last_lr()[0]}
            run.log(epoch + 1, **metrics)
            bar.update(1, loss=metrics["loss"])
            if epoch + 1 < epochs:
                run.save_checkpoint({"student": student.state_dict(), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict()}, epoch + 1)
    return metrics["loss"]


def kd_side(run, real, x, y, epochs: int, former: bool):
    """One side of the KD part: identical networks, data and draws; returns (student, final mean loss)."""
    from toolbox_kd.features import FeatureTap
    from toolbox_kd.method import kd_step_loss
    from toolbox_kd.shots import step_schedule

    recipe = kd_recipe()
    torch.manual_seed(0)
    student = build_for("wrn-16-1", real.spec)
    teacher = build_for("wrn-16-1", real.spec).eval().requires_grad_(False)
    s_tap, t_tap = (FeatureTap(m, m.feature_layers, "wrn-16-1", role) for m, role in ((student, "student"), (teacher, "teacher")))
    milestones = [epochs // 2]
    if former:
        opt = torch.optim.SGD(student.parameters(), lr=recipe.optim.lr, momentum=recipe.optim.momentum,
                              weight_decay=recipe.optim.weight_decay)
        sched = step_schedule(opt, milestones, recipe.schedule.gamma)
        return student, former_kd_fit(run, recipe, student, teacher, s_tap, t_tap, opt, sched, x, y, epochs)
    opt = engine.make_optimizer(student.parameters(), recipe.optim)
    batches = engine.TensorBatches(x, y, recipe.data.batch_size, run.generator("order"), run.device)
    sched = step_schedule(opt, milestones, recipe.schedule.gamma, steps_per_epoch=len(batches))
    trainer = engine.Engine(run, student, opt, sched, speed=recipe.speed, loop=recipe.loop)
    loss = kd_step_loss(recipe, trainer, teacher, s_tap, t_tap, run.generator("augment"))
    return student, trainer.fit(batches, epochs, loss=loss, title="engine kd")["train_loss"]


def supervised_side(run, args, real, x, y, former: bool):
    model, opt, sched = setup(args, real, former)
    if former:
        return model, former_fit(run, model, opt, sched, x, y, args.epochs, args.batch)["train_loss"]
    batches = engine.TensorBatches(x, y, args.batch, run.generator("data"), run.device)
    metrics = engine.Engine(run, model, opt, sched).fit(batches, args.epochs, loss=lambda m, a, b: F.cross_entropy(m(a), b),
                                                        title="engine")
    return model, metrics["train_loss"]


def time_sides(tmp: Path, part: str, repeats: int, epochs: int, side_fn) -> dict[str, list[float]]:
    """CPU-seconds per epoch of each side, alternating the order; both sides must end in the same weights."""
    times: dict[str, list[float]] = {"former": [], "engine": []}
    for r in range(-1, repeats):  # repeat -1 warms both sides up (first calls of each op) untimed
        ends = {}
        for side in (("former", "engine") if r % 2 == 0 else ("engine", "former")):
            run = make_run(tmp, f"{part}-{side}{r}", method=part)
            t0 = time.process_time()
            model, loss = side_fn(run, side == "former")
            if r >= 0:
                times[side].append((time.process_time() - t0) / epochs)
            ends[side] = (loss, [w.detach().clone() for w in model.parameters()])
        (former_loss, former_w), (engine_loss, engine_w) = ends["former"], ends["engine"]
        if former_loss != engine_loss or not all(torch.equal(a, b) for a, b in zip(former_w, engine_w)):
            raise SystemExit(f"{part}: the engine and the former loop disagree: not a like-for-like timing")
    return times


def report(times: dict[str, list[float]]) -> float:
    for side, ts in times.items():
        print(f"  {side:7s} CPU-s/epoch: min {min(ts):.4f}  median {statistics.median(ts):.4f}  "
              f"(runs: {', '.join(f'{t:.4f}' for t in ts)})")
    ratio = min(times["former"]) / min(times["engine"])
    print(f"  median ratio: {statistics.median(times['former']) / statistics.median(times['engine']):.3f}  "
          f"min ratio: {ratio:.3f}")
    return ratio


def host_read_cost(steps: int, epoch_seconds: float) -> str:
    """What removing one ``loss.item()`` per step can save on this CPU: the read itself (no queue to
    wait for here), per epoch, against the epoch's time. On a GPU each read waits for every queued
    kernel, which is where the engine's one read per window pays."""
    loss = (torch.randn(64, 10, requires_grad=True) ** 2).sum()
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        loss.item()
    per_read = (time.perf_counter() - t0) / n
    return (f"  one host read costs {per_read * 1e6:.2f} us on this CPU: {steps} per epoch = "
            f"{100 * per_read * steps / epoch_seconds:.3f} % of an epoch, the most the engine can save here")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="mlp")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--kd-epochs", type=int, default=2)
    p.add_argument("--kd-repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOOLBOX_NO_PROGRESS", "1")
    real = data.load("digits")
    x, y = real.normalize(real.train_x), real.train_y
    with tempfile.TemporaryDirectory() as tmp:
        sup = time_sides(Path(tmp), "supervised", args.repeats, args.epochs,
                         lambda run, former: supervised_side(run, args, real, x, y, former))
        kd = time_sides(Path(tmp), "kd", args.kd_repeats, args.kd_epochs,
                        lambda run, former: kd_side(run, real, x, y, args.kd_epochs, former))
    steps = math.ceil(len(y) / args.batch)
    print(f"supervised {args.arch} on digits, {len(y)} images, batch {args.batch} ({steps} steps/epoch), "
          f"{args.epochs} epochs x {args.repeats} repeats, {args.threads} thread(s); identical weights: yes")
    ratios = [report(sup)]
    print(host_read_cost(steps, min(sup["engine"])))
    print(f"kd+at (crop) wrn-16-1 -> wrn-16-1 on digits, {len(y)} images, batch {kd_recipe().data.batch_size}, "
          f"{args.kd_epochs} epochs x {args.kd_repeats} repeats, {args.threads} thread(s); identical weights: yes")
    ratios.append(report(kd))
    print(f"speedup: {min(ratios):.3f}")


if __name__ == "__main__":
    main()
