"""Sharpness as the top eigenvalue of the loss Hessian, by power iteration on Hessian-vector
products (double backward: H v = d(g . v)/dw), never forming the Hessian."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toolbox import artifacts, data
from toolbox.errors import UsageError
from toolbox.evaluation import check_options, number_option
from toolbox.recipes import MAX_SEED, MAX_STEPS
from toolbox.second_order import second_order

from .noise import symmetric_label_noise


def hessian_vector_product(model, x, y, v, batch_size: int = 1000) -> list:
    """H v for the mean cross-entropy over (x, y), summed batch by batch (weights n_b / N)."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = [torch.zeros_like(p) for p in params]
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        with second_order():
            loss = F.cross_entropy(model(xb), yb) * (len(xb) / len(x))
            grads = torch.autograd.grad(loss, params, create_graph=True)
            dot = sum((g * u).sum() for g, u in zip(grads, v))
            for acc, h in zip(out, torch.autograd.grad(dot, params)):
                acc += h
    return out


def top_eigenvalue(model, x, y, *, iters: int = 100, tol: float = 1e-4, batch_size: int = 1000, seed: int = 0):
    """(largest-magnitude Hessian eigenvalue, iterations used); stops when it changes by < tol relative."""
    params = [p for p in model.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=g).to(p.device) for p in params]
    value, used = 0.0, 0
    for used in range(1, iters + 1):
        norm = torch.sqrt(sum((u * u).sum() for u in v))
        v = [u / norm for u in v]
        hv = hessian_vector_product(model, x, y, v, batch_size)
        new = sum((h * u).sum() for h, u in zip(hv, v)).item()  # Rayleigh quotient v^T H v, |v| = 1
        v = [h.detach() for h in hv]
        if abs(new - value) <= tol * abs(new):
            return new, used
        value = new
    return value, used


def evaluate_hessian(source, options: dict, device) -> dict:
    """Top Hessian eigenvalue of the model's training loss, on the labels it was trained with."""
    check_options(options, ("split", "samples", "iters", "tol", "seed"), "the hessian metric")
    samples = number_option(options, "samples", None, 1, MAX_STEPS)  # None: the whole split
    iters = number_option(options, "iters", 100, 1, MAX_STEPS)
    tol = number_option(options, "tol", 1e-4, 0.0, 1.0, float)
    seed = number_option(options, "seed", 0, 0, MAX_SEED)
    loaded = artifacts.load_model(source, device=device)
    model = loaded.model.eval()  # batch norm on its running statistics, no dropout
    real = data.load(loaded.config["dataset"])
    split = options.get("split") or "train"
    if split not in ("train", "test"):
        raise UsageError(f"--split must be train or test, not '{split}'")
    x, y = (real.train_x, real.train_y) if split == "train" else (real.test_x, real.test_y)
    noise = loaded.config.get("label_noise") or {}
    if split == "train" and noise.get("fraction"):
        y = symmetric_label_noise(y, real.num_classes, noise["fraction"], noise["seed"])
    x = real.normalize(x[:samples]).to(device)
    y = y[:samples].to(device)
    value, used = top_eigenvalue(model, x, y, iters=iters, tol=tol, seed=seed)
    labels = f"{noise['fraction']:.0%} symmetric noise (seed {noise['seed']}), as trained" \
        if split == "train" and noise.get("fraction") else "clean"
    return {"metrics": {"hessian_top_eigenvalue": value, "power_iterations": used},
            "protocol": {"split": split, "samples": len(x), "labels": labels, "loss": "mean cross-entropy",
                         "mode": "eval (batch-norm running statistics)"},
            "dataset": real.name, "architecture": loaded.config["architecture"]}
