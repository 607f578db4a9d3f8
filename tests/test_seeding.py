"""Seeded initialisation depends on the seed alone and leaves every global generator as it was."""

import torch
from torch import nn

from toolbox.seeding import init_with_seed, seeded


def test_the_same_seed_builds_the_same_network_whatever_the_global_stream():
    torch.manual_seed(1)
    a = init_with_seed(lambda: nn.Linear(5, 3), 42)
    torch.rand(100)  # the global stream moves on
    b = init_with_seed(lambda: nn.Linear(5, 3), 42)
    c = init_with_seed(lambda: nn.Linear(5, 3), 43)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)


def test_global_generators_are_untouched():
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    with seeded(123):
        torch.rand(1000)
    assert torch.equal(torch.rand(4), expected)


def test_no_cuda_reseed_is_queued(monkeypatch):
    # torch.manual_seed queues a reseed of every CUDA generator for when CUDA starts; ours must not
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(seed))
    with seeded(5):
        torch.rand(3)
    assert calls == []


def test_the_network_equals_the_one_torch_manual_seed_builds():
    # the copies this replaced called torch.manual_seed(seed) then build(): the CPU stream is the same,
    # so every network DC, DM, the evaluator, FDS and the leakage audit build stays bit-identical
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2**61 + 3)
        expected = nn.Conv2d(3, 8, 3)
    got = init_with_seed(lambda: nn.Conv2d(3, 8, 3), 2**61 + 3)
    assert torch.equal(got.weight, expected.weight) and torch.equal(got.bias, expected.bias)
