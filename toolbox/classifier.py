"""Training and testing one classifier with SGD (optionally SAM) on tensors, on the engine
(toolbox.engine): the classifier behind supervised training and the methods that vary its data or optimiser."""

from __future__ import annotations

import torch.nn.functional as F

from . import artifacts, data, engine
from .augment import random_crop_flip
from .errors import UsageError
from .evaluation import accuracy
from .models import build_for
from .sam import SAM, frozen_bn_stats


def make_scheduler(recipe, optimizer, steps_per_epoch: int):
    """The recipe's ``schedule:`` over ``recipe.epochs`` epochs of ``steps_per_epoch`` optimiser steps."""
    return engine.make_scheduler(optimizer, recipe.schedule, recipe.epochs * steps_per_epoch, steps_per_epoch)


def fit(recipe, run, real, train_x, train_y, title: str):
    """Train ``recipe.model`` on (normalised) ``train_x``/``train_y`` on the engine; test on ``real``'s test
    split every ``recipe.eval_every`` epochs. Returns (model, final metrics)."""
    spec = real.spec
    device = run.device
    model = build_for(recipe.model.arch, spec, **recipe.model.kwargs).to(device)
    opt = engine.make_optimizer(model.parameters(), recipe.optim)
    batches = engine.make_batches(train_x, train_y, recipe.data, run.generator("data"), device)
    sched = make_scheduler(recipe, opt, engine.optimizer_steps(len(batches), recipe.loop.accumulate))
    trainer = engine.Engine(run, model, opt, sched, speed=recipe.speed, loop=recipe.loop)
    augment = _augmenter(recipe.data, run.generator("augment"), trainer)
    test_x = real.normalize(real.test_x)

    def evaluate(m):
        return {"accuracy": accuracy(m, test_x, real.test_y, device=device)}

    def cross_entropy(forward, x, y):
        return F.cross_entropy(forward(augment(x)), y)

    options = {"loss": cross_entropy}
    if recipe.sam and recipe.sam.radius > 0:
        if trainer.scaler.is_enabled():
            raise UsageError("sam does not run with speed.amp=fp16 (its two passes would unscale the gradients twice); "
                             "use speed.amp=bf16 or fp32")
        options = {"step": _sam_step(SAM.from_settings(model.parameters(), opt, recipe.sam), augment)}
    metrics = trainer.fit(batches, recipe.epochs, evaluate=evaluate, eval_every=recipe.eval_every,
                          checkpoint_every=recipe.checkpoint_every or 1, title=title, **options)
    return model, {"accuracy": metrics["accuracy"], "train_loss": metrics["train_loss"]}


def _augmenter(settings, generator, trainer):
    """On several ranks each draws the whole batch's crops and flips and keeps its rows (trainer.share)."""
    if settings.augment == "none":
        return lambda x: x
    return lambda x: random_crop_flip(x, settings.crop_padding, settings.augment == "crop_flip", generator,
                                      trainer.share)


def _sam_step(sam: SAM, augment):
    """SAM's two passes on one batch: gradient at w, ascend to w + e, gradient there, step from w."""

    def step(trainer, x, y):
        x = augment(x)
        with trainer.autocast():
            loss = F.cross_entropy(trainer.forward(x), y)
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.backward(loss)
        sam.first_step()
        with frozen_bn_stats(trainer.model):  # the perturbed pass leaves batch-norm statistics alone
            with trainer.autocast():
                perturbed = F.cross_entropy(trainer.forward(x), y)
            trainer.backward(perturbed)
        trainer.clip()
        sam.second_step()
        return loss

    return step


def evaluate_classifier(source, options: dict, device, method: str, config_keys: tuple[str, ...] = ()) -> dict:
    """The evaluate hook of methods whose artifact is a plain classifier: --metric accuracy only."""
    from .evaluation import check_options

    check_options(options, (), f"evaluating a {method} model")
    metric = options.get("metric") or "accuracy"
    if metric != "accuracy":
        raise UsageError(f"{method} models support --metric accuracy, not '{metric}'")
    return evaluate_accuracy(source, device, config_keys)


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
