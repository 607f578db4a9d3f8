"""Training-time augmentation on in-memory batches, vectorised and driven by an explicit generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x, padding: int, flip: bool, generator, share=None):
    """Per-sample random crop (zero padding) and horizontal flip, vectorised.

    ``share`` (rows, total): ``x`` is the rows ``rows`` of a batch of ``total`` samples, a rank's part of
    the global batch (toolbox.engine.Engine.share). The offsets and flips are drawn for the whole batch
    and this part's kept, so the ranks together augment as one process would, and the generator, the
    same on every rank, advances by the same count at any world size (resume stays exact)."""
    n, c, h, w = x.shape
    part, total = share if share is not None else (slice(None), n)
    if padding:
        padded = F.pad(x, (padding,) * 4)
        oy = torch.randint(0, 2 * padding + 1, (total,), generator=generator)[part].to(x.device)
        ox = torch.randint(0, 2 * padding + 1, (total,), generator=generator)[part].to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        x = padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if flip:
        mask = (torch.rand(total, generator=generator)[part] < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x
