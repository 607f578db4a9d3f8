"""mixup training and evaluation of the resulting classifier, on toolbox's public API only.

mixup (Zhang et al. 2018, eq. 1): for a batch (x, y) and a random pairing ``perm`` of it, draw
lambda ~ Beta(alpha, alpha), train on x~ = lambda x + (1 - lambda) x[perm] with the loss
lambda CE(f(x~), y) + (1 - lambda) CE(f(x~), y[perm]). One lambda per batch, as in the paper's code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from toolbox import artifacts, data
from toolbox.errors import UsageError
from toolbox.evaluation import accuracy
from toolbox.registry import current


def mixup_batch(x, y, alpha: float, generator):
    """(mixed inputs, y, y[perm], lambda) for one batch; alpha <= 0 returns the batch unmixed."""
    if alpha <= 0:
        return x, y, y, 1.0
    # torch.distributions takes no generator: lambda comes from the global torch RNG, which
    # run.save_checkpoint stores and --resume restores like the named generators
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam


def mixup_loss(logits, y_a, y_b, lam: float):
    return lam * F.cross_entropy(logits, y_a) + (1 - lam) * F.cross_entropy(logits, y_b)


def train_mixup(recipe, run) -> dict:
    images = data.load(recipe.data.dataset)
    c, _, size = images.shape
    model = current().architecture(recipe.model.arch)(
        num_classes=images.num_classes, in_channels=c, image_size=size, **recipe.model.kwargs).to(run.device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.optim.lr, momentum=recipe.optim.momentum,
                          weight_decay=recipe.optim.weight_decay)
    n = len(images.train_y)
    batch = min(recipe.data.batch_size, n)
    steps = math.ceil(n / batch)
    total = recipe.epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))

    start = 0
    state = run.load_checkpoint()  # None unless --resume; then RNG states are restored too
    if state is not None:
        start = run.restore(state, model=model, optimizer=opt, scheduler=sched)

    train_x = images.normalize(images.train_x).to(run.device)
    train_y = images.train_y.to(run.device)
    test_x = images.normalize(images.test_x)
    order_gen, pair_gen = run.generator("data"), run.generator("mixup")
    every = recipe.checkpoint_every or 1
    metrics: dict = {}
    with run.progress(recipe.epochs, f"mixup {recipe.model.arch} on {images.name}", start=start) as bar:
        for epoch in range(start, recipe.epochs):
            model.train()
            order = torch.randperm(n, generator=order_gen).to(run.device)
            total_loss = 0.0
            for i in range(steps):
                idx = order[i * batch:(i + 1) * batch]
                x, y_a, y_b, lam = mixup_batch(train_x[idx], train_y[idx], recipe.alpha, pair_gen)
                loss = mixup_loss(model(x), y_a, y_b, lam)
                run.check_finite(loss, epoch * steps + i)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_loss += loss.item()
            metrics = {"train_loss": total_loss / steps,
                       "accuracy": accuracy(model, test_x, images.test_y, device=run.device)}
            run.log(epoch + 1, **metrics)
            bar.update(1, **metrics)
            if (epoch + 1) % every == 0 and epoch + 1 < recipe.epochs:
                run.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict()}, epoch + 1)
    run.save_model(model, arch=recipe.model.arch, arch_kwargs=recipe.model.kwargs, dataset=images.spec,
                   metrics=metrics, extra={"alpha": recipe.alpha})
    return metrics


def evaluate_model(source, options: dict, device) -> dict:
    metric = options.get("metric") or "accuracy"
    if metric != "accuracy":
        raise UsageError(f"mixup models support --metric accuracy, not '{metric}'")
    loaded = artifacts.load_model(source, device=device)
    test = data.load(loaded.config["dataset"])
    acc = accuracy(loaded.model, test.test_x, test.test_y, mean=loaded.mean, std=loaded.std, device=device)
    return {"metrics": {"accuracy": acc}, "dataset": test.name, "alpha": loaded.config.get("alpha")}
