"""Time supervised digits epochs on the engine vs the classifier loop it replaced.

The former loop (toolbox/classifier.py::fit before the engine, transcribed below) read the loss with
``loss.item()`` and ``run.check_finite`` after every step; the engine keeps the losses on the device
and reads them once per ``loop.log_every`` steps. Both sides train identically initialised networks
on the same draws (their weights are compared at the end), on one thread, alternating side by side in
this process, and pay for the same run bookkeeping (metrics.jsonl, progress bar, checkpoints).
Prints CPU-seconds per epoch and ends with `speedup: <former / engine>` from the fastest repeat of each
side (timeit's rule: on a shared machine the slower repeats measure the neighbours, not the loop).

    python benchmarks/engine_step.py [--arch mlp] [--epochs 5] [--repeats 5] [--threads 1]
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


def make_run(root: Path, name: str) -> Run:
    d = root / name
    d.mkdir()
    (d / "run.json").write_text("{}")
    return Run(d, SimpleNamespace(seed=0), "supervised", "train", torch.device("cpu"))


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="mlp")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOOLBOX_NO_PROGRESS", "1")
    real = data.load("digits")
    x, y = real.normalize(real.train_x), real.train_y
    times: dict[str, list[float]] = {"former": [], "engine": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(-1, args.repeats):  # repeat -1 warms both sides up (first calls of each op) untimed
            for side in (("former", "engine") if r % 2 == 0 else ("engine", "former")):
                run = make_run(Path(tmp), f"{side}{r}")
                model, opt, sched = setup(args, real, side == "former")
                t0 = time.process_time()
                if side == "former":
                    metrics = former_fit(run, model, opt, sched, x, y, args.epochs, args.batch)
                else:
                    batches = engine.TensorBatches(x, y, args.batch, run.generator("data"), run.device)
                    metrics = engine.Engine(run, model, opt, sched).fit(batches, args.epochs, loss=lambda m, a, b:
                                                                        F.cross_entropy(m(a), b), title="engine")
                if r >= 0:
                    times[side].append((time.process_time() - t0) / args.epochs)
                weights = [w.detach().clone() for w in model.parameters()]
                if side == "former":
                    former_weights, former_loss = weights, metrics["train_loss"]
                else:
                    engine_weights, engine_loss = weights, metrics["train_loss"]
            same = engine_loss == former_loss and all(torch.equal(a, b) for a, b in zip(former_weights, engine_weights))
            if not same:
                raise SystemExit("the engine and the former loop disagree: not a like-for-like timing")
    steps = math.ceil(len(y) / args.batch)
    print(f"supervised {args.arch} on digits, {len(y)} images, batch {args.batch} ({steps} steps/epoch), "
          f"{args.epochs} epochs x {args.repeats} repeats, {args.threads} thread(s); identical weights: yes")
    for side, ts in times.items():
        print(f"  {side:7s} CPU-s/epoch: min {min(ts):.4f}  median {statistics.median(ts):.4f}  "
              f"(runs: {', '.join(f'{t:.4f}' for t in ts)})")
    print(f"median ratio: {statistics.median(times['former']) / statistics.median(times['engine']):.3f}")
    print(f"speedup: {min(times['former']) / min(times['engine']):.3f}")


if __name__ == "__main__":
    main()
