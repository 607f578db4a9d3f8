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


class StreamedRows:
    """The normalised training split of a streamed dataset (toolbox.data.sources.StreamedImages), standing
    in for the tensor the in-memory path holds, as far as condensation uses it: ``rows[idx]`` with a
    LongTensor ``idx`` of any shape (drawn by ClassIndex over the in-memory labels, whose positions are the
    stream's rows) decodes exactly those rows from disk (each distinct row once) and returns them stacked as
    ``idx.shape + image shape`` on ``device``; ``len``, ``shape``, ``dtype`` and ``device`` as the tensor's.
    Nothing else is decoded or kept, so memory holds one real batch, not the split. The values are the
    in-memory path's (the same division and normalisation per item), so a run is bit-identical."""

    dtype = torch.float32

    def __init__(self, stream, device):
        self.stream, self.device = stream, torch.device(device)
        self.shape = torch.Size((len(stream), *stream.shape))
        self.decoded = 0  # rows decoded so far (run.json records it)

    def __len__(self) -> int:
        return len(self.stream)

    def __getitem__(self, idx):
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.long:
            raise TypeError(f"streamed training images are indexed by a LongTensor of positions, not {type(idx).__name__}")
        unique, inverse = torch.unique(idx.reshape(-1).cpu(), return_inverse=True)
        if unique.numel() == 0:
            return torch.empty((*idx.shape, *self.shape[1:]), dtype=self.dtype, device=self.device)
        rows = self.stream.tensor_at(unique.tolist())
        self.decoded += unique.numel()
        return rows[inverse].view(*idx.shape, *self.shape[1:]).to(self.device)
