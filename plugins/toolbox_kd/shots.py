"""Few-shot data: M real images per class, drawn per seed, and the schedule scaled to match."""

from __future__ import annotations

import torch

from toolbox.errors import UsageError


def sample_shots(labels, shots: int, num_classes: int, generator) -> torch.Tensor:
    """Sorted indices of ``shots`` images of each class, drawn without replacement."""
    picked = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if shots > len(idx):
            raise UsageError(f"--shots {shots} is more than class {c} has ({len(idx)} training images); "
                             f"use at most {min(int((labels == k).sum()) for k in range(num_classes))}")
        picked.append(idx[torch.randperm(len(idx), generator=generator)[:shots]])
    return torch.cat(picked).sort().values


def scaled_schedule(epochs: int, milestones: list[int], n_train: int, num_classes: int, shots: int) -> tuple[int, list[int]]:
    """The reference's rule: multiply by N_train / (classes * M), so the number of SGD steps (at a
    batch no larger than the few-shot set) stays that of full-data training; truncated as it does
    (int(), not round(): CIFAR-10 M = 75 ends its last decay at epoch 10666, not 10667)."""
    if shots <= 0:
        return epochs, list(milestones)
    scale = n_train / (num_classes * shots)
    return max(1, int(epochs * scale)), [int(m * scale) for m in milestones]


def step_schedule(optimizer, milestones: list[int], gamma: float, steps_per_epoch: int = 1):
    """lr times gamma for each milestone passed, stepped once per optimiser step (``steps_per_epoch`` of
    them per epoch). The reference steps its MultiStepLR with step(epoch=e) after epoch e, which sets the
    rate of epoch e + 1 from last_epoch = e: a decay at milestone m first applies to epoch m + 1 (0-based),
    one epoch later than step() would. torch's recursive MultiStepLR multiplies the current rate by gamma
    at each milestone, as the reference's does, so the rates are the reference's bit for bit."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[(m + 1) * steps_per_epoch for m in milestones],
                                                gamma=gamma)
