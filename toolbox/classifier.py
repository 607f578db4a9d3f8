"""Training and testing one classifier with SGD (optionally SAM) on in-memory tensors, with
checkpoint/resume: the loop behind supervised training and the methods that vary its data or optimiser."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from . import artifacts, data
from .augment import random_crop_flip
from .errors import UsageError
from .evaluation import accuracy
from .registry import current
from .sam import SAM, frozen_bn_stats


def make_scheduler(recipe, optimizer, steps_per_epoch: int):
    total = recipe.epochs * steps_per_epoch
    s = recipe.schedule
    if s.kind == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    if s.kind == "step":
        milestones = [m * steps_per_epoch for m in s.milestones]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: s.gamma ** sum(step >= m for m in milestones))
    if s.kind == "file":
        lrs = _windowed_learning_rates(s.file)
        if recipe.optim.lr <= 0:
            raise UsageError("schedule.kind=file scales optim.lr: set optim.lr to any positive value")
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lrs[min(len(lrs) * step // total, len(lrs) - 1)] / recipe.optim.lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def _windowed_learning_rates(ref: str | None) -> list[float]:
    """The ``learning_rates`` list of a schedule file (or of a run directory's schedule.json)."""
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


def build_classifier(arch_name: str, kwargs: dict, spec):
    arch = current().architecture(arch_name)
    c, _, w = spec.shape
    return arch(num_classes=spec.num_classes, in_channels=c, image_size=w, **kwargs)


def fit(recipe, run, real, train_x, train_y, title: str):
    """Train ``recipe.model`` on (normalised) ``train_x``/``train_y``; test on ``real``'s test split every
    ``recipe.eval_every`` epochs. Returns (model, final metrics)."""
    spec = real.spec
    device = run.device
    model = build_classifier(recipe.model.arch, recipe.model.kwargs, spec).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.optim.lr, momentum=recipe.optim.momentum,
                          weight_decay=recipe.optim.weight_decay, nesterov=recipe.optim.nesterov)
    sam = SAM.from_settings(model.parameters(), opt, recipe.sam) if recipe.sam and recipe.sam.radius > 0 else None
    n = len(train_x)
    batch = min(recipe.data.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    sched = make_scheduler(recipe, opt, steps_per_epoch)
    start_epoch = 0
    state = run.load_checkpoint()
    if state is not None:
        start_epoch = run.restore(state, model=model, optimizer=opt, scheduler=sched)
    gen = run.generator("data")
    aug_gen = run.generator("augment")
    train_x, train_y = train_x.to(device), train_y.to(device)
    test_x = real.normalize(real.test_x)
    every = recipe.checkpoint_every or 1
    metrics: dict = {}
    with run.progress(recipe.epochs, title, start=start_epoch) as bar:
        for epoch in range(start_epoch, recipe.epochs):
            model.train()
            order = torch.randperm(n, generator=gen).to(device)
            total_loss = 0.0
            for i in range(steps_per_epoch):
                idx = order[i * batch:(i + 1) * batch]
                x = train_x[idx]
                if recipe.data.augment != "none":
                    x = random_crop_flip(x, recipe.data.crop_padding, recipe.data.augment == "crop_flip", aug_gen)
                loss = F.cross_entropy(model(x), train_y[idx])
                run.check_finite(loss, epoch * steps_per_epoch + i)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if sam is None:
                    opt.step()
                else:
                    sam.first_step()
                    with frozen_bn_stats(model):  # the perturbed pass leaves batch-norm statistics alone
                        F.cross_entropy(model(x), train_y[idx]).backward()
                    sam.second_step()
                sched.step()
                total_loss += loss.item()
            metrics = {"train_loss": total_loss / steps_per_epoch, "lr": sched.get_last_lr()[0]}
            if (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == recipe.epochs:
                metrics["accuracy"] = accuracy(model, test_x, real.test_y, device=device)
            run.log(epoch + 1, **metrics)
            bar.update(1, **{k: v for k, v in metrics.items() if k != "lr"})
            if (epoch + 1) % every == 0 and epoch + 1 < recipe.epochs:
                run.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict()}, epoch + 1)
    return model, {"accuracy": metrics["accuracy"], "train_loss": metrics["train_loss"]}


def evaluate_accuracy(source, device, config_keys: tuple[str, ...] = ()) -> dict:
    """Test accuracy of a saved classifier on the test split of the dataset it was trained for, with the
    config.json entries named in ``config_keys`` reported beside it (an FDS model's learned schedule)."""
    loaded = artifacts.load_model(source, device=device)
    real = data.load(loaded.config["dataset"])
    if tuple(loaded.config["input_shape"]) != tuple(real.shape):
        raise UsageError(f"model expects input {loaded.config['input_shape']} but {real.name} is {list(real.shape)}")
    acc = accuracy(loaded.model, real.test_x, real.test_y, mean=loaded.mean, std=loaded.std, device=device)
    return {"metrics": {"accuracy": acc, "error": 1 - acc}, "dataset": real.name, "test_images": len(real.test_y),
            "architecture": loaded.config["architecture"], **{k: loaded.config.get(k) for k in config_keys}}
