"""The papers' evaluation protocol: train fresh ConvNets on a (synthetic or selected) set only and
report their accuracy on the real test set after the last epoch.

SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256, E+1 epochs, lr x0.1 after epoch E//2+1
with the optimiser re-created there (its momentum is dropped, as in the reference). The N models
train together: their weights are stacked (torch.func.stack_module_state) and one vmapped call does
every model's step, which pays where one model's step is too small to keep the hardware busy (tiny
sets, GPUs). Where a single model's step already is (CPU, 100+ images or CIFAR-sized images), the
vmapped grouped convolutions are slower than plain ones, so the models train one after another
instead; ``Protocol.stacked`` (the recipe's ``eval.stacked``) forces either path. Batch-norm models
always train one after another: their running statistics are buffers updated in place, which a
vmapped call cannot do per model. So do all models under a reduced precision (the run's speed.amp
bf16/fp16): autocast does not reach into the vmapped call (with torch 2.13 on the CPU its
convolutions and logits stay fp32), and the asked precision is what the run records. Each model owns a generator (initialisation, shuffling,
augmentation) seeded from (seed, model index), so model i gets the same draws whether it trains
alone or with others. That is also what lets several ranks (toolbox.distributed) split the models:
rank r trains models ``share(N)`` (stacked among themselves where stacking applies) and the ranks
gather the accuracies in model order.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from toolbox import distributed
from toolbox.engine import Engine, make_optimizer
from toolbox.models import build_for
from toolbox.seeding import init_with_seed
from toolbox.speed import Resolved, as_written

from . import augment


@dataclass
class Protocol:
    models: int = 5
    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    augment: str = "none"  # "none" or a DSA strategy (per-image parameters, one family per batch)
    arch: str = "convnet"
    stacked: bool | str = "auto"  # train the models together (vmap): auto | True | False (see use_stacked)

    def describe(self) -> dict:
        return {**asdict(self), "optimizer": "SGD", "lr_drop": f"x0.1 after epoch {self.epochs // 2 + 1}",
                "total_epochs": self.epochs + 1, "reported": "test accuracy after the last epoch (mean, std over models)"}


def model_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index * 7919 + 17) % (1 << 63)


def stacked_pays(images: torch.Tensor, protocol: Protocol, device) -> bool:
    """Whether training the models together beats training them one by one.

    Measured with benchmarks/condense_step.py on the CPU (1 thread): stacking wins for digits at
    ipc 1 (10 8x8 images per step) and loses for 100 8x8 images or 10 CIFAR-sized images per step.
    """
    if torch.device(device).type != "cpu":
        return True
    per_step = min(images.shape[0], protocol.batch_size) * images[0].numel()
    return per_step <= 1024


def use_stacked(model, images: torch.Tensor, protocol: Protocol, device, stacked: bool | str = "auto",
                precision: str = "fp32") -> bool:
    """Whether the models train together: never for batch-norm models (running statistics) or under a
    reduced ``precision`` (autocast does not reach a vmapped call), else ``stacked`` (True/False), or
    for "auto" where it pays (stacked_pays)."""
    if precision != "fp32" or any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return False
    return stacked_pays(images, protocol, device) if stacked == "auto" else bool(stacked)


class ModelBatches:
    """The evaluator's batch source for the engine: each model's own shuffle of (images, labels) every
    epoch and, with DSA ``families``, its own per-image augmentation of every batch, all drawn from that
    model's generator in the same order whether the model trains alone or stacked with others.
    ``stacked``: batches of every model at once, x [N, b, ...] and y [N, b]; else one model's x [b, ...]
    and y [b] (one generator)."""

    def __init__(self, images, labels, batch_size: int, generators: list, families, stacked: bool):
        self.images, self.labels, self.generators = images, labels, generators
        self.families, self.stacked = families, stacked
        self.n = images.shape[0]
        self.batch = min(batch_size, self.n)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch)

    def epoch(self, epoch: int):
        perms = torch.stack([torch.randperm(self.n, generator=g, device=g.device) for g in self.generators])
        perms = perms.to(self.images.device)
        for start in range(0, self.n, self.batch):
            idx = perms[:, start:start + self.batch]
            x, y = self.images[idx], self.labels[idx]
            if self.families is not None:
                size, b = self.images.shape[-1], idx.shape[1]
                draws = augment.Params.cat([augment.draw(b, self.families, size, g, one_family=True) for g in self.generators])
                x = augment.apply(x.flatten(0, 1), draws, self.families).view_as(x)
            yield (x, y) if self.stacked else (x[0], y[0])


class Stacked(torch.nn.Module):
    """N models of one architecture as one module for the engine: their weights stacked
    (torch.func.stack_module_state), ``forward(x [N, B, ...])`` -> logits [N, B, K] in one vmapped call,
    ``predict(x [B, ...])`` -> every model's logits for the same images. Model i's logits depend on
    model i's weights only, so the sum of the models' losses trains each model on its own."""

    def __init__(self, models):
        super().__init__()
        params, self.stacked_buffers = stack_module_state(models)
        self.names = list(params)
        self.weights = torch.nn.ParameterList(params.values())
        base = copy.deepcopy(models[0]).to("meta")  # the architecture only; the weights come per call

        def one(p, b, x):
            return functional_call(base, (p, b), (x,))

        self._train, self._predict = vmap(one), vmap(one, in_dims=(0, 0, None))

    def params(self) -> dict:
        return dict(zip(self.names, self.weights))

    def forward(self, x):
        return self._train(self.params(), self.stacked_buffers, x)

    def predict(self, x):
        return self._predict(self.params(), self.stacked_buffers, x)


def stacked_cross_entropy(forward, x, y):
    """The sum over models of each model's mean cross-entropy on its own batch (x [N, b, ...], y [N, b])."""
    logits = forward(x)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape[0], -1).mean(1).sum()


def cross_entropy(forward, x, y):
    return F.cross_entropy(forward(x), y)


def train_models(build, images, labels, protocol: Protocol, seeds: list[int], device, stacked: bool | None = None,
                 speed: Resolved | None = None):
    """Train one model per seed on (images, labels); -> (forward(x) -> logits [N, B, K], stacked params).

    ``stacked``: train the models together (vmap) or one after another; None follows
    ``protocol.stacked`` (see use_stacked). Either way model i sees the same initialisation, shuffles
    and augmentations. ``speed``: the run's resolved speed settings for the training passes (None:
    fp32, as written); the stacked path, taken at fp32 only (see use_stacked), keeps the default memory
    layout (its stacked convolution weights are 5-D) and runs uncompiled. Testing runs in fp32, as the
    core's classifiers do.
    """
    device = torch.device(device)
    speed = speed or as_written(device.type)
    images, labels = images.to(device), labels.to(device)
    models = [init_with_seed(build, s).to(device) for s in seeds]
    stacked = use_stacked(models[0], images, protocol, device, protocol.stacked if stacked is None else stacked, speed.amp)
    # on the images' device: the shuffles and augmentation draws need no copy there (a copy to a GPU waits for it)
    gens = [torch.Generator(device=images.device).manual_seed(s + 1) for s in seeds]
    families = augment.parse_strategy(protocol.augment) if protocol.augment != "none" else None
    if not stacked:
        for model, g in zip(models, gens):
            batches = ModelBatches(images, labels, protocol.batch_size, [g], families, stacked=False)
            _fit(model, model.parameters(), batches, cross_entropy, protocol, device, speed)
        params, _ = stack_module_state(models)

        @torch.no_grad()
        def forward_all(x):
            return torch.stack([model.eval()(x) for model in models])

        return forward_all, params

    together = Stacked(models)
    batches = ModelBatches(images, labels, protocol.batch_size, gens, families, stacked=True)
    _fit(together, together.weights, batches, stacked_cross_entropy, protocol, device,
         replace(speed, channels_last=False, compile=False))
    return together.predict, together.params()


def _fit(model, params, batches, loss, protocol: Protocol, device, speed: Resolved) -> None:
    """The protocol's schedule on the engine: E//2+2 epochs at ``protocol.lr``, then a NEW optimiser at a
    tenth of it for the remaining epochs (the reference re-creates it, so momentum restarts at zero)."""
    params = list(params)
    trainer = Engine(None, model, make_optimizer(params, protocol), device=device, speed=speed)
    total, first = protocol.epochs + 1, min(protocol.epochs + 1, protocol.epochs // 2 + 2)
    trainer.fit(batches, first, loss=loss)
    if total > first:
        trainer.optimizer = make_optimizer(params, replace(protocol, lr=protocol.lr * 0.1))
        trainer.fit(batches, total - first, loss=loss)


@torch.no_grad()
def accuracies_on(forward, test_x, test_y, batch_size: int = 1000) -> torch.Tensor:
    correct = 0
    for start in range(0, test_x.shape[0], batch_size):
        logits = forward(test_x[start:start + batch_size])
        correct = correct + (logits.argmax(-1) == test_y[start:start + batch_size]).sum(1)
    return correct.double().cpu() / test_x.shape[0]


def evaluate_set(images, labels, data, protocol: Protocol, seed: int, device, build=None, speed: Resolved | None = None) -> dict:
    """Train ``protocol.models`` fresh models on (images, labels) (normalised) under ``speed`` (see
    train_models), test on the real test set."""
    if build is None:
        build = functools.partial(build_for, protocol.arch, data.spec)
    seeds = [model_seed(seed, i) for i in range(protocol.models)]
    mine = seeds[distributed.share(len(seeds))]
    local = []  # a rank left without a model (fewer models than ranks) still joins the gathering
    if mine:
        forward, _ = train_models(build, images, labels, protocol, mine, device, speed=speed)
        local = accuracies_on(forward, data.normalize(data.test_x).to(device), data.test_y.to(device)).tolist()
    accs = torch.tensor([a for part in distributed.gather_objects(local) for a in part], dtype=torch.float64)
    return {"accuracies": [round(float(a), 6) for a in accs], "accuracy": float(accs.mean()),
            "accuracy_std": float(accs.std(unbiased=False)), "seeds": seeds}
