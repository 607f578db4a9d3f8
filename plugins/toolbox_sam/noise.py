"""Symmetric label noise, reproducible from (labels, fraction, seed) alone, so an evaluation can
rebuild the exact labels a model was trained on from its config.json."""

from __future__ import annotations

import torch


def symmetric_label_noise(labels, num_classes: int, fraction: float, seed: int):
    """A copy of ``labels`` where round(fraction * N) of them, chosen uniformly, move to a uniformly
    drawn *other* class (so exactly that fraction is wrong)."""
    if fraction <= 0:
        return labels.clone()
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    flip = torch.randperm(n, generator=g)[: round(fraction * n)]
    shift = torch.randint(1, num_classes, (len(flip),), generator=g)
    noisy = labels.clone()
    noisy[flip] = (labels[flip] + shift) % num_classes
    return noisy
