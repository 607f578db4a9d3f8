"""Datasets as in-memory tensors: ``load("digits")`` -> ImageData (cached per process).

Readers of the published file formats live in ``readers``; where files are looked for and how they
are fetched, in ``download``; the names and statistics, in ``catalog``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_cache: dict[str, ImageData] = {}


@dataclass
class ImageData:
    spec: Any
    train_x: Any
    train_y: Any
    test_x: Any
    test_y: Any

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.spec.shape)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.spec.mean)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.spec.std)

    def normalize(self, x):
        from ..evaluation import normalize

        return normalize(x, self.mean, self.std)

    def denormalize(self, x):
        import torch

        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return x * s + m


def load(name_or_spec) -> ImageData:
    from ..registry import current

    spec = current().dataset(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    key = f"{spec.name}@{spec.where()}"  # the data root can change between calls (tests, TOOLBOX_DATA)
    if key not in _cache:
        train_x, train_y, test_x, test_y = spec.load_arrays()
        _cache[key] = ImageData(spec, train_x, train_y, test_x, test_y)
    return _cache[key]
