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
    batch no larger than the few-shot set) stays that of full-data training."""
    if shots <= 0:
        return epochs, list(milestones)
    scale = n_train / (num_classes * shots)
    return max(1, round(epochs * scale)), [round(m * scale) for m in milestones]
