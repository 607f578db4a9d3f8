"""Image grids as PNG, de-normalised, for a person to look at (condensed sets, generator samples)."""

from __future__ import annotations

import math
from pathlib import Path


def save_grid(path: Path, images, *, mean, std, nrow: int | None = None, pad: int = 1) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    x = images.detach().float().cpu()
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    x = (x * std_t + mean_t).clamp(0, 1)
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = x[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()
    # upscale tiny images (8x8 digits) so the PNG is legible without a viewer's zoom
    scale = max(1, 640 // max(array.shape[0], array.shape[1]))
    if scale > 1:
        array = array.repeat(scale, 0).repeat(scale, 1)
    plt.imsave(path, array, cmap="gray" if c == 1 else None, vmin=0.0, vmax=1.0)
    return path
