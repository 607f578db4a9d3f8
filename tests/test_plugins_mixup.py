"""The example plugin's algorithm: mixed inputs are the convex combination of a batch and its random
pairing, the loss is the same combination of the two cross-entropies (Zhang et al. 2018, eq. 1)."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mixup(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples" / "toolbox-compression-mixup"))
    import toolbox_mixup.training

    yield toolbox_mixup.training
    for name in [n for n in sys.modules if n.startswith("toolbox_mixup")]:
        del sys.modules[name]


def test_mixed_batch_is_a_convex_combination_of_pairs(mixup):
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 10
    mixed, y_a, y_b, lam = mixup.mixup_batch(x, y, alpha=1.0, generator=torch.Generator().manual_seed(1))
    assert 0 < lam < 1 and torch.equal(y_a, y)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(y_b, y[perm])
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])


def test_lambda_follows_beta_alpha_alpha(mixup):
    torch.manual_seed(0)
    x, y = torch.zeros(2, 1, 1, 1), torch.zeros(2, dtype=torch.long)
    lams = torch.tensor([mixup.mixup_batch(x, y, 0.2, torch.Generator())[3] for _ in range(4000)])
    # Beta(0.2, 0.2): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 0.1786, mass near 0 and 1
    assert lams.mean().item() == pytest.approx(0.5, abs=0.02)
    assert lams.var().item() == pytest.approx(1 / (4 * 1.4), abs=0.01)
    assert ((lams < 0.1) | (lams > 0.9)).float().mean().item() > 0.5


def test_alpha_zero_is_plain_training(mixup):
    x, y = torch.randn(4, 1, 8, 8), torch.arange(4)
    mixed, y_a, y_b, lam = mixup.mixup_batch(x, y, 0.0, torch.Generator())
    assert mixed is x and lam == 1.0
    logits = torch.randn(4, 10)
    assert torch.equal(mixup.mixup_loss(logits, y_a, y_b, lam), F.cross_entropy(logits, y))


def test_loss_is_the_mixture_of_both_targets(mixup):
    logits, y_a, y_b = torch.randn(8, 10), torch.arange(8), torch.arange(8).flip(0)
    expected = 0.3 * F.cross_entropy(logits, y_a) + 0.7 * F.cross_entropy(logits, y_b)
    assert torch.allclose(mixup.mixup_loss(logits, y_a, y_b, 0.3), expected)
