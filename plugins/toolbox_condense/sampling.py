"""Per-class sampling of real images with device-resident index tensors (no DataLoader, no Python
loop over classes)."""

from __future__ import annotations

import torch


class ClassIndex:
    """Indices of every class's images, padded to one [classes, max_count] matrix.

    Classes may hold different numbers of images (digits: 132-139 per class), so a draw of n per
    class returns a mask as well: row c holds min(n, count_c) valid indices, then padding.
    """

    def __init__(self, labels: torch.Tensor, num_classes: int):
        counts = torch.bincount(labels, minlength=num_classes)
        if int(counts.min()) == 0:
            missing = int((counts == 0).nonzero()[0])
            raise ValueError(f"class {missing} has no training images")
        order = torch.argsort(labels, stable=True)
        width = int(counts.max())
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(width, device=labels.device)
        gather = (starts[:, None] + pos[None, :]).clamp(max=labels.numel() - 1)
        self.valid = pos[None, :] < counts[:, None]
        self.indices = torch.where(self.valid, order[gather], order[starts][:, None].expand(-1, width))
        self.counts = counts
        self.smallest = int(counts.min())  # draws of at most this many per class need no mask
        self.num_classes = num_classes

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n random images per class without replacement -> (indices [C, m], mask [C, m]), m = min(n, max count).

        A uniform random permutation per class: random keys, padding pushed to the end, argsort.
        """
        keys = torch.rand(self.indices.shape, generator=generator, device=generator.device).to(self.indices.device)
        keys = keys.masked_fill(~self.valid, 2.0)
        order = keys.argsort(dim=1)[:, : min(n, self.indices.shape[1])]
        idx = self.indices.gather(1, order)
        mask = torch.arange(order.shape[1], device=idx.device)[None, :] < self.counts.clamp(max=n)[:, None]
        return idx, mask
