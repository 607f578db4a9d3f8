"""The inner loop of FDS: SGD with momentum on a flat weight vector, carrying dw/dlambda forward.

Hyperparameters are shared over windows of the horizon (K learning rates, one momentum, one weight
decay), so the tangent Z = dw/dlambda has K + 2 columns and the memory is O(P * (K + 2)) however
many steps are unrolled; reverse mode would have to keep every step's weights instead.

Update (per step, active learning-rate window k, g the clamped minibatch gradient):
    v' = mom * v + g + wd * w              w' = w - lr * v'
Differentiating, with C = dv/dlambda and H the Hessian of the clamped gradient:
    C' = mom * C + H Z + wd * Z  (+ v in the momentum column, + w in the weight-decay column)
    Z' = Z (1 - lr wd) - lr H Z - mom lr C
         - (g + wd w + mom v) in column k, - lr v in the momentum column, - lr w in the wd column
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Hypers:
    """K learning rates shared over equal windows of the horizon, one momentum, one weight decay."""

    lrs: list[float]
    momentum: float
    weight_decay: float

    @property
    def num(self) -> int:
        return len(self.lrs) + 2

    def as_vector(self) -> list[float]:
        return [*self.lrs, self.momentum, self.weight_decay]

    @classmethod
    def from_vector(cls, values) -> Hypers:
        values = [float(v) for v in values]
        return cls(values[:-2], values[-2], values[-1])


def window(step: int, total: int, k: int) -> int:
    return int(k * step / total)


def batches(n: int, batch_size: int, epochs: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches of ``epochs`` reshuffled passes (the last batch of a pass may be smaller)."""
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        yield from order.split(batch_size)


def num_steps(n: int, batch_size: int, epochs: int) -> int:
    return epochs * math.ceil(n / batch_size)


@dataclass
class Unrolled:
    """What survives the horizon: the final weights and velocity, and their tangents (None without)."""

    w: torch.Tensor
    v: torch.Tensor
    Z: torch.Tensor | None
    C: torch.Tensor | None

    def numel(self) -> int:
        return sum(t.numel() for t in (self.w, self.v, self.Z, self.C) if t is not None)


def unroll(net, w0: torch.Tensor, hypers: Hypers, x: torch.Tensor, y: torch.Tensor, index_batches: list,
           *, grad_clamp: float | None, hz_clamp: float | None, tangents: bool = True) -> Unrolled:
    """Train from ``w0`` over ``index_batches`` with the windowed hyperparameters.

    With ``tangents`` also carry Z = dw/dlambda (columns: the K learning rates, momentum, weight
    decay) by Hessian-vector products (double backward), clamping each H Z entry to +-hz_clamp as
    the paper does to keep the tangent stable over long horizons (None: exact).
    """
    K, total = len(hypers.lrs), len(index_batches)
    mom, wd = hypers.momentum, hypers.weight_decay
    MOM, WD = K, K + 1
    w = w0.detach().clone()
    v = torch.zeros_like(w)
    Z = torch.zeros(w.numel(), K + 2, dtype=w.dtype, device=w.device) if tangents else None
    C = torch.zeros_like(Z) if tangents else None
    for step, idx in enumerate(index_batches):
        k = window(step, total, K)
        lr = hypers.lrs[k]
        w.requires_grad_(True)
        loss = F.cross_entropy(net(w, x[idx]), y[idx])
        g = torch.autograd.grad(loss, w, create_graph=tangents)[0]
        if grad_clamp is not None:
            g = g.clamp(-grad_clamp, grad_clamp)
        if tangents:
            # columns of later learning-rate windows are still zero: skip their products
            HZ = hessian_columns(g, w, Z, [*range(k + 1), MOM, WD])
            if hz_clamp is not None:
                HZ.clamp_(-hz_clamp, hz_clamp)
        g, w = g.detach(), w.detach()
        if tangents:
            Z_next = Z * (1 - lr * wd) - lr * HZ - mom * lr * C
            Z_next[:, k] -= g + wd * w + mom * v
            Z_next[:, MOM] -= lr * v
            Z_next[:, WD] -= lr * w
            C = mom * C + HZ + wd * Z
            C[:, MOM] += v
            C[:, WD] += w
            Z = Z_next
        v = mom * v + g + wd * w
        w = w - lr * v
    return Unrolled(w.detach(), v, Z, C)


def hessian_columns(g: torch.Tensor, w: torch.Tensor, Z: torch.Tensor, columns: list[int]) -> torch.Tensor:
    """H Z[:, j] = grad_w (g . Z[:, j]) for the listed columns (double backward); zeros elsewhere."""
    HZ = torch.zeros_like(Z)
    for n, j in enumerate(columns):
        HZ[:, j] = torch.autograd.grad(g, w, grad_outputs=Z[:, j], retain_graph=n + 1 < len(columns))[0]
    return HZ


def validation_gradient(net, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple:
    """(mean over validation batches of grad_w L_val, mean validation loss) at ``w``."""
    w = w.detach().requires_grad_(True)
    grads, losses = [], []
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        loss = F.cross_entropy(net(w, xb), yb)
        grads.append(torch.autograd.grad(loss, w)[0])
        losses.append(loss.detach())
    return torch.stack(grads).mean(0), torch.stack(losses).mean()


def hypergradient(net, unrolled: Unrolled, val_x, val_y, batch_size: int) -> torch.Tensor:
    """dL_val(w_T)/dlambda = mean over validation batches of grad_w L_val(w_T) . Z_T  ([K + 2])."""
    grad, _ = validation_gradient(net, unrolled.w, val_x, val_y, batch_size)
    return grad @ unrolled.Z
