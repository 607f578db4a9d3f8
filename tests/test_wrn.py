"""WideResNet: the papers' parameter counts, shapes at 32x32 and 8x8, group outputs, initialisation."""

import math

import pytest
import torch

from toolbox.models.wrn import WideResNet

torch.set_num_threads(1)


@pytest.mark.parametrize("depth,width,millions", [(16, 1, 0.175), (16, 2, 0.692), (40, 1, 0.564), (40, 2, 2.244)])
def test_parameter_counts_match_the_papers(depth, width, millions):
    model = WideResNet(depth, width, num_classes=10)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 3) == millions


def test_cifar_shapes_and_group_outputs():
    model = WideResNet(16, 2, num_classes=10).eval()
    logits, feats = model.forward_features(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 10)
    assert [tuple(f.shape) for f in feats] == [(3, 32, 32, 32), (3, 64, 16, 16), (3, 128, 8, 8)]
    assert torch.equal(model(torch.ones(1, 3, 32, 32)), model.forward_features(torch.ones(1, 3, 32, 32))[0])


def test_digits_shapes():
    model = WideResNet(16, 1, num_classes=10, in_channels=1, image_size=8).eval()
    logits, feats = model.forward_features(torch.randn(5, 1, 8, 8))
    assert logits.shape == (5, 10)
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 8, 8), (32, 4, 4), (64, 2, 2)]
    assert model.feature_layers == ("group1", "group2", "group3")
    assert all(hasattr(model, name) for name in model.feature_layers)


def test_group_outputs_are_the_named_modules_outputs():
    model = WideResNet(10, 1, in_channels=1, image_size=8).eval()
    seen = {}
    for name in model.feature_layers:
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    _, feats = model.forward_features(torch.randn(2, 1, 8, 8))
    for name, f in zip(model.feature_layers, feats):
        assert torch.equal(seen[name], f)


def test_initialisation():
    torch.manual_seed(0)
    model = WideResNet(16, 8)
    conv = model.group3[0].conv1  # 3x3, 512 out channels: He fan-out std = sqrt(2 / (9 * 512))
    assert conv.bias is None
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 512)), rel=0.02)
    assert torch.all(model.bn.weight == 1) and torch.all(model.bn.bias == 0)
    assert torch.all(model.fc.bias == 0)


def test_bad_depth():
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(18, 1)
