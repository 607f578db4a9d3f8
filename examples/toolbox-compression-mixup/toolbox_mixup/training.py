"""mixup training on toolbox's public API only (its models are plain classifiers: core evaluates them).

mixup (Zhang et al. 2018, eq. 1): for a batch (x, y) and a random pairing ``perm`` of it, draw
lambda ~ Beta(alpha, alpha), train on x~ = lambda x + (1 - lambda) x[perm] with the loss
lambda CE(f(x~), y) + (1 - lambda) CE(f(x~), y[perm]). One lambda per batch, as in the paper's code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toolbox import data, engine
from toolbox.evaluation import accuracy
from toolbox.models import build_for


def mixup_batch(x, y, alpha: float, generator):
    """(mixed inputs, y, y[perm], lambda) for one batch; alpha <= 0 returns the batch unmixed."""
    if alpha <= 0:
        return x, y, y, 1.0
    # torch.distributions takes no generator: lambda comes from the global torch RNG, which
    # checkpoints store and --resume restores like the run generators
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam


def mixup_loss(logits, y_a, y_b, lam: float):
    return lam * F.cross_entropy(logits, y_a) + (1 - lam) * F.cross_entropy(logits, y_b)


def train_mixup(recipe, run) -> dict:
    images = data.load(recipe.data.dataset)               # float32 [N,C,H,W] in [0,1] + int64 labels
    model = build_for(recipe.model.arch, images.spec, **recipe.model.kwargs).to(run.device)
    opt = engine.make_optimizer(model.parameters(), recipe.optim)
    batches = engine.make_batches(images.normalize(images.train_x), images.train_y, recipe.data,
                                  run.generator("data"), run.device)   # a new permutation every epoch
    sched = engine.make_scheduler(opt, "cosine", recipe.epochs * len(batches), len(batches))
    pairs = run.generator("mixup")                        # saved with checkpoints, restored on --resume
    test_x = images.normalize(images.test_x)

    def loss(model, x, y):                                # the only part that is mixup's own
        x, y_a, y_b, lam = mixup_batch(x, y, recipe.alpha, pairs)
        return mixup_loss(model(x), y_a, y_b, lam)

    def evaluate(model):
        return {"accuracy": accuracy(model, test_x, images.test_y, device=run.device)}

    # fit restores a --resume run's checkpoint and random generators itself, right before the first step
    metrics = engine.Engine(run, model, opt, sched, speed=recipe.speed).fit(
        batches, recipe.epochs, loss=loss, evaluate=evaluate, checkpoint_every=recipe.checkpoint_every or 1,
        title=f"mixup {recipe.model.arch} on {images.name}")
    metrics = {"train_loss": metrics["train_loss"], "accuracy": metrics["accuracy"]}
    run.save_model(model, arch=recipe.model.arch, arch_kwargs=recipe.model.kwargs, dataset=images.spec,
                   metrics=metrics, extra={"alpha": recipe.alpha})
    return metrics

