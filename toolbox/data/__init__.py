"""Datasets as in-memory tensors: ``load("digits")`` -> ImageData (cached per process).

``load`` accepts every dataset reference (``refs``): a registered name, a folder of class subfolders,
or ``hf-hub:org/name@rev``; the last two are read by ``sources``. Inside a run, where the data came
from (source, fingerprint or commit, split) is recorded in run.json under ``data``.

Readers of the published file formats live in ``readers``; where files are looked for and how they
are fetched, in ``download``; the names and statistics, in ``catalog``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import RunError

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

    # a folder or Hub dataset whose training split exceeds the memory budget: a map-style dataset decoding
    # it from disk (toolbox.data.sources.StreamedImages); train_x is then None
    train_stream: Any = None

    @property
    def streamed(self) -> bool:
        return self.train_stream is not None

    def normalized_train(self):
        """The normalised training split: a tensor, or the streamed dataset (make_batches takes either)."""
        return self.train_stream if self.streamed else self.normalize(self.train_x)

    def require_in_memory(self, what: str):
        """Refuse, in one line, a method that needs the whole training split as a tensor."""
        if self.streamed:
            loading = self.spec.source.get("loading", {})
            raise RunError(f"{what} needs the training split of {self.name} in memory, but its decoded size "
                           f"({loading.get('decoded_train_bytes', 0) / 2**30:.2f} GiB) exceeds the memory budget "
                           f"({loading.get('memory_budget', 0) / 2**30:.2f} GiB); raise TOOLBOX_MEMORY_BUDGET or "
                           "set a smaller data.image_size")

    def normalize(self, x):
        from ..evaluation import normalize

        return normalize(x, self.mean, self.std)

    def denormalize(self, x):
        import torch

        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return x * s + m


def load(ref) -> ImageData:
    """The dataset a reference names (a registered name, a folder, ``hf-hub:org/name@rev``) or a spec."""
    from ..registry import current
    from . import refs

    if isinstance(ref, str):
        registry = current()
        canonical = refs.canonical(ref, registry.datasets)
        if refs.kind(refs.split_options(canonical)[0], registry.datasets) != "name":
            data = _load_source(canonical)
            _record(data.spec)
            return data
        spec = registry.dataset(canonical)
    else:
        spec = ref
    key = f"{spec.name}@{spec.where()}"  # the data root can change between calls (tests, TOOLBOX_DATA)
    if key not in _cache:
        train_x, train_y, test_x, test_y = spec.load_arrays()
        _cache[key] = ImageData(spec, train_x, train_y, test_x, test_y)
    data = _cache[key]
    _record(data.spec)
    return data


def _load_source(canonical: str) -> ImageData:
    from . import sources

    table = sources.scan(canonical)
    budget = os.environ.get("TOOLBOX_MEMORY_BUDGET", "")
    key = f"{canonical}#{table.source.get('fingerprint') or table.source.get('commit')}#{budget}"
    if key not in _cache:
        spec, (train_x, *rest), streamed = sources.build(table)
        data = ImageData(spec, train_x, *rest, train_stream=streamed)
        if streamed is not None:
            data.train_x = NotInMemory(data)
        _cache[key] = data
    return _cache[key]


class NotInMemory:
    """train_x of a streamed dataset: any use (a method that wants the whole split as a tensor) raises
    ImageData.require_in_memory's one line instead of an AttributeError deep inside the method."""

    def __init__(self, data: ImageData):
        self._data = data

    def _refuse(self, *_args, **_kwargs):
        self._data.require_in_memory("this method")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        self._refuse()

    __getitem__ = __len__ = __iter__ = __array__ = _refuse


def _record(spec) -> None:
    """Note in the current run's run.json (if a run is executing) which data it read."""
    from ..runs import _CURRENT

    run = _CURRENT.get()
    if run is None:
        return
    source = spec.source or {"kind": "builtin", "name": spec.name, "where": spec.where()}
    run.record(data={"ref": spec.name, **source})
