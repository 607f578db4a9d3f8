"""mixup training and evaluation of the resulting classifier, on toolbox's public API only.

mixup (Zhang et al. 2018, eq. 1): for a batch (x, y) and a random pairing ``perm`` of it, draw
lambda ~ Beta(alpha, alpha), train on x~ = lambda x + (1 - lambda) x[perm] with the loss
lambda CE(f(x~), y) + (1 - lambda) CE(f(x~), y[perm]). One lambda per batch, as in the paper's code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toolbox import artifacts, data, engine
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
    images = data.load(recipe.data.dataset)               # float32 [N,C,H,W] in [0,1] + int64 labels
    c, _, size = images.shape
    model = current().architecture(recipe.model.arch)(num_classes=images.num_classes, in_channels=c,
                                                      image_size=size, **recipe.model.kwargs).to(run.device)
    opt = engine.make_optimizer(model.parameters(), recipe.optim)
    batches = engine.TensorBatches(images.normalize(images.train_x), images.train_y, recipe.data.batch_size,
                                   run.generator("data"), run.device)   # a new permutation every epoch
    sched = engine.make_scheduler(opt, "cosine", recipe.epochs * len(batches), len(batches))
    pair_gen = run.generator("mixup")                     # saved with checkpoints, restored on --resume
    test_x = images.normalize(images.test_x)

    def loss(model, x, y):                                # the only part that is mixup's own
        x, y_a, y_b, lam = mixup_batch(x, y, recipe.alpha, pair_gen)   # lam ~ Beta: global torch RNG
        return mixup_loss(model(x), y_a, y_b, lam)

    def evaluate(model):
        return {"accuracy": accuracy(model, test_x, images.test_y, device=run.device)}

    # the engine restores a --resume run's checkpoint (and RNG states) itself, right before training
    metrics = engine.Engine(run, model, opt, sched).fit(
        batches, recipe.epochs, loss=loss, evaluate=evaluate, checkpoint_every=recipe.checkpoint_every or 1,
        title=f"mixup {recipe.model.arch} on {images.name}")
    metrics = {"train_loss": metrics["train_loss"], "accuracy": metrics["accuracy"]}
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
