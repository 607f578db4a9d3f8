"""Seeded model initialisation that leaves every global random generator as it was.

Methods that build many networks (DC's fresh network per outer iteration, the evaluator's N
models, FDS, the leakage audit) need each network's default initialisation to depend on a seed
alone, while the run's own random stream goes on untouched so that results and resume do not
depend on how many networks were built. ``torch.manual_seed`` inside ``fork_rng(devices=[])`` is
not that: it also reseeds every CUDA generator (queued until CUDA starts when it has not) and
fork_rng then restores only the CPU one.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def seeded(seed: int):
    """Within the block the CPU generator (and those of CUDA devices already in use) start from
    ``seed``; afterwards all of them are exactly as before."""
    import torch

    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def init_with_seed(build, seed: int):
    """``build()`` (a module constructor) with its default initialisation drawn from ``seed`` only."""
    with seeded(seed):
        return build()
