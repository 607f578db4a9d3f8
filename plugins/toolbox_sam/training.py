"""The sam method's training loop: SGD wrapped in SAM / ASAM / Fisher-SAM, on optionally noisy labels,
with checkpoint/resume; and its accuracy evaluation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from toolbox import artifacts, data
from toolbox.augment import random_crop_flip
from toolbox.errors import UsageError
from toolbox.evaluation import accuracy
from toolbox.registry import current
from toolbox.sam import SAM, frozen_bn_stats

from .noise import symmetric_label_noise


def _scheduler(recipe, optimizer, steps_per_epoch: int):
    total = recipe.epochs * steps_per_epoch
    s = recipe.schedule
    if s.kind == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    if s.kind == "step":
        milestones = [m * steps_per_epoch for m in s.milestones]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: s.gamma ** sum(step >= m for m in milestones))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def train_sam(recipe, run) -> dict:
    real = data.load(recipe.data.dataset)
    spec = real.spec
    device = run.device
    c, _, w = spec.shape
    model = current().architecture(recipe.model.arch)(num_classes=spec.num_classes, in_channels=c, image_size=w,
                                                      **recipe.model.kwargs).to(device)
    base = torch.optim.SGD(model.parameters(), lr=recipe.optim.lr, momentum=recipe.optim.momentum,
                           weight_decay=recipe.optim.weight_decay, nesterov=recipe.optim.nesterov)
    sam = SAM.from_settings(model.parameters(), base, recipe.sam) if recipe.sam.radius > 0 else None
    train_x = real.normalize(real.train_x).to(device)
    train_y = symmetric_label_noise(real.train_y, spec.num_classes, recipe.data.label_noise,
                                    recipe.data.label_noise_seed).to(device)
    n = len(train_x)
    batch = min(recipe.data.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    sched = _scheduler(recipe, base, steps_per_epoch)
    start_epoch = 0
    state = run.load_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"])
        base.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch = state["step"]
    gen = run.generator("data")
    aug_gen = run.generator("augment")
    test_x = real.normalize(real.test_x)
    every = recipe.checkpoint_every or 1
    kind = "plain" if sam is None else "fisher-sam" if recipe.sam.fisher else "asam" if recipe.sam.adaptive else "sam"
    metrics: dict = {}
    with run.progress(recipe.epochs, f"{kind} {recipe.model.arch} on {spec.name}", start=start_epoch) as bar:
        for epoch in range(start_epoch, recipe.epochs):
            model.train()
            order = torch.randperm(n, generator=gen).to(device)
            total_loss = 0.0
            for i in range(steps_per_epoch):
                idx = order[i * batch:(i + 1) * batch]
                x, y = train_x[idx], train_y[idx]
                if recipe.data.augment != "none":
                    x = random_crop_flip(x, recipe.data.crop_padding, recipe.data.augment == "crop_flip", aug_gen)
                loss = F.cross_entropy(model(x), y)
                run.check_finite(loss, epoch * steps_per_epoch + i)
                base.zero_grad(set_to_none=True)
                loss.backward()
                if sam is None:
                    base.step()
                else:
                    sam.first_step()
                    # the perturbed pass must not move the batch-norm statistics (SAM's reference code)
                    with frozen_bn_stats(model):
                        F.cross_entropy(model(x), y).backward()
                    sam.second_step()
                sched.step()
                total_loss += loss.item()
            metrics = {"train_loss": total_loss / steps_per_epoch, "lr": sched.get_last_lr()[0]}
            if (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == recipe.epochs:
                metrics["accuracy"] = accuracy(model, test_x, real.test_y, device=device)
            run.log(epoch + 1, **metrics)
            bar.update(1, **{k: v for k, v in metrics.items() if k != "lr"})
            if (epoch + 1) % every == 0 and epoch + 1 < recipe.epochs:
                run.save_checkpoint({"model": model.state_dict(), "optimizer": base.state_dict(),
                                     "scheduler": sched.state_dict()}, epoch + 1)
    final = {"accuracy": metrics["accuracy"], "train_loss": metrics["train_loss"]}
    run.save_model(model, arch=recipe.model.arch, arch_kwargs=recipe.model.kwargs, dataset=spec, metrics=final,
                   extra={"sam": {"kind": kind, **recipe.sam.model_dump()},
                          "label_noise": {"fraction": recipe.data.label_noise, "seed": recipe.data.label_noise_seed}})
    return final


def evaluate_accuracy(source, device) -> dict:
    loaded = artifacts.load_model(source, device=device)
    real = data.load(loaded.config["dataset"])
    if tuple(loaded.config["input_shape"]) != tuple(real.shape):
        raise UsageError(f"model expects input {loaded.config['input_shape']} but {real.name} is {list(real.shape)}")
    acc = accuracy(loaded.model, real.test_x, real.test_y, mean=loaded.mean, std=loaded.std, device=device)
    return {"metrics": {"accuracy": acc, "error": 1 - acc}, "dataset": real.name, "test_images": len(real.test_y),
            "architecture": loaded.config["architecture"]}
