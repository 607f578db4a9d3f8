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
vmapped call cannot do per model. Each model owns a generator (initialisation, shuffling,
augmentation) seeded from (seed, model index), so model i gets the same draws whether it trains
alone or with others.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from toolbox.models import build_for
from toolbox.seeding import init_with_seed

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


def use_stacked(model, images: torch.Tensor, protocol: Protocol, device, stacked: bool | str = "auto") -> bool:
    """Whether the models train together: never for batch-norm models (running statistics), else
    ``stacked`` (True/False), or for "auto" where it pays (stacked_pays)."""
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return False
    return stacked_pays(images, protocol, device) if stacked == "auto" else bool(stacked)


def train_models(build, images, labels, protocol: Protocol, seeds: list[int], device, stacked: bool | None = None):
    """Train one model per seed on (images, labels); -> (forward(x) -> logits [N, B, K], stacked params).

    ``stacked``: train the models together (vmap) or one after another; None follows
    ``protocol.stacked`` (see use_stacked). Either way model i sees the same initialisation, shuffles
    and augmentations.
    """
    images, labels = images.to(device), labels.to(device)
    models = [init_with_seed(build, s).to(device) for s in seeds]
    stacked = use_stacked(models[0], images, protocol, device, protocol.stacked if stacked is None else stacked)
    # on the images' device: the shuffles and augmentation draws need no copy there (a copy to a GPU waits for it)
    gens = [torch.Generator(device=images.device).manual_seed(s + 1) for s in seeds]
    families = augment.parse_strategy(protocol.augment) if protocol.augment != "none" else None
    if not stacked:
        for model, g in zip(models, gens):
            _train_one(model, images, labels, protocol, families, g, device)
        params, buffers = stack_module_state(models)

        @torch.no_grad()
        def forward_all(x):
            return torch.stack([model.eval()(x) for model in models])

        return forward_all, params

    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def forward_one(p, b, x):
        return functional_call(base, (p, b), (x,))

    train_forward = vmap(forward_one)
    n, count = images.shape[0], len(seeds)
    lr = protocol.lr

    def optimizer(lr):
        return torch.optim.SGD(params.values(), lr=lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay)

    opt = optimizer(lr)
    for ep in range(protocol.epochs + 1):
        perms = torch.stack([torch.randperm(n, generator=g, device=g.device) for g in gens]).to(device)
        for start in range(0, n, protocol.batch_size):
            idx = perms[:, start:start + protocol.batch_size]
            xb, yb = images[idx], labels[idx]
            if families is not None:
                b = idx.shape[1]
                draws = augment.Params.cat([augment.draw(b, families, images.shape[-1], g, one_family=True) for g in gens])
                xb = augment.apply(xb.flatten(0, 1), draws, families).view_as(xb)
            logits = train_forward(params, buffers, xb)
            losses = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(count, -1).mean(1)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()  # model i's loss depends on model i's weights only
            opt.step()
        if ep == protocol.epochs // 2 + 1:
            lr *= 0.1
            opt = optimizer(lr)

    test_forward = vmap(forward_one, in_dims=(0, 0, None))
    return (lambda x: test_forward(params, buffers, x)), params


def _train_one(model, images, labels, protocol: Protocol, families, g: torch.Generator, device) -> None:
    """The same schedule and the same draws from ``g`` as one model of the stacked path."""
    n, lr = images.shape[0], protocol.lr
    model.train()

    def optimizer(lr):
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay)

    opt = optimizer(lr)
    for ep in range(protocol.epochs + 1):
        perm = torch.randperm(n, generator=g, device=g.device).to(device)
        for start in range(0, n, protocol.batch_size):
            idx = perm[start:start + protocol.batch_size]
            xb = images[idx]
            if families is not None:
                xb = augment.apply(xb, augment.draw(idx.shape[0], families, images.shape[-1], g, one_family=True), families)
            loss = F.cross_entropy(model(xb), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if ep == protocol.epochs // 2 + 1:
            lr *= 0.1
            opt = optimizer(lr)


@torch.no_grad()
def accuracies_on(forward, test_x, test_y, batch_size: int = 1000) -> torch.Tensor:
    correct = 0
    for start in range(0, test_x.shape[0], batch_size):
        logits = forward(test_x[start:start + batch_size])
        correct = correct + (logits.argmax(-1) == test_y[start:start + batch_size]).sum(1)
    return correct.double().cpu() / test_x.shape[0]


def evaluate_set(images, labels, data, protocol: Protocol, seed: int, device, build=None) -> dict:
    """Train ``protocol.models`` fresh models on (images, labels) (normalised), test on the real test set."""
    if build is None:
        build = functools.partial(build_for, protocol.arch, data.spec)
    seeds = [model_seed(seed, i) for i in range(protocol.models)]
    forward, _ = train_models(build, images, labels, protocol, seeds, device)
    accs = accuracies_on(forward, data.normalize(data.test_x).to(device), data.test_y.to(device))
    return {"accuracies": [round(float(a), 6) for a in accs], "accuracy": float(accs.mean()),
            "accuracy_std": float(accs.std(unbiased=False)), "seeds": seeds}
