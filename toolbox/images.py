"""Image grids as PNG, de-normalised, for a person to look at (condensed sets, generator samples)."""

from __future__ import annotations

import math
from pathlib import Path


def save_grid(path: Path, images, *, mean, std, nrow: int | None = None, pad: int = 1,
              labels: list[str] | None = None, title: str | None = None) -> Path:
    """The images de-normalised in a grid of ``nrow`` per row; with ``labels``, each tile's label is
    written under it, and ``title`` above the grid (a figure then, instead of bare pixels)."""
    if labels is not None or title is not None:
        return _labelled_grid(Path(path), images, mean=mean, std=std, nrow=nrow, labels=labels, title=title)
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


def _labelled_grid(path: Path, images, *, mean, std, nrow, labels, title) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    x = images.detach().float().cpu()
    x = (x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)).clamp(0, 1)
    n = x.shape[0]
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    import textwrap

    tile = 0.9 if labels is None else 1.05  # inches: room for a label under each tile
    title = textwrap.fill(title, max(24, int(tile * nrow * 13))) if title else ""  # ~13 characters an inch at 9 pt
    head = 0.2 * (title.count("\n") + 1) + 0.1 if title else 0.0
    height = tile * rows + head
    fig, axes = plt.subplots(rows, nrow, figsize=(tile * nrow, height), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        img = x[i, 0].numpy() if x.shape[1] == 1 else x[i].permute(1, 2, 0).numpy()
        ax.imshow(img, cmap="gray" if x.shape[1] == 1 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
        if labels is not None:
            ax.set_xlabel(labels[i], fontsize=7, labelpad=2)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - head / height))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
