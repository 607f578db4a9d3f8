"""ConvNet of the condensation papers: shapes per dataset, variants, default init, embed."""

import pytest
import torch
from torch import nn

from toolbox.models.convnet import ConvNet


@pytest.mark.parametrize("channels,size,feat", [(3, 32, 128 * 4 * 4), (1, 28, 128 * 4 * 4), (1, 8, 128)])
def test_feature_sizes_match_the_reference(channels, size, feat):
    net = ConvNet(num_classes=10, in_channels=channels, image_size=size)
    x = torch.randn(2, channels, size, size)
    assert net.embed(x).shape == (2, feat)
    assert net(x).shape == (2, 10)
    assert torch.equal(net.classifier(net.embed(x)), net(x))


def test_default_is_conv_instance_norm_relu_avgpool_x3():
    net = ConvNet(in_channels=1, image_size=28)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert len(convs) == 3 and all(c.bias is not None and c.out_channels == 128 for c in convs)
    assert convs[0].padding == (3, 3) and convs[1].padding == (1, 1)  # 28 -> 32 on the first conv
    assert all(n.num_groups == n.num_channels == 128 and n.affine for n in norms)
    assert sum(isinstance(m, nn.AvgPool2d) for m in net.modules()) == 3


@pytest.mark.parametrize("norm,kind", [("batchnorm", nn.BatchNorm2d), ("layernorm", nn.LayerNorm),
                                       ("groupnorm", nn.GroupNorm), ("none", None)])
def test_norm_variants(norm, kind):
    net = ConvNet(in_channels=3, image_size=32, norm=norm, width=32, depth=2)
    found = [m for m in net.modules() if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm))]
    assert (not found) if kind is None else (len(found) == 2 and all(isinstance(m, kind) for m in found))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_pool_and_activation_variants():
    net = ConvNet(in_channels=1, image_size=8, pool="none", act="sigmoid", depth=1, width=16)
    assert net.num_features == 16 * 8 * 8 and any(isinstance(m, nn.Sigmoid) for m in net.modules())
    assert any(isinstance(m, nn.MaxPool2d) for m in ConvNet(pool="maxpool", act="leakyrelu").modules())
    with pytest.raises(ValueError, match="norm"):
        ConvNet(norm="weird")
    with pytest.raises(ValueError, match="below 1x1"):
        ConvNet(in_channels=1, image_size=8, depth=4)


def test_default_init_is_pytorch_default():
    torch.manual_seed(0)
    net = ConvNet(in_channels=1, image_size=8)
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 128, 3, padding=1)
    assert torch.equal(net.features[0].weight, conv.weight)


def test_registered_variants_build():
    from toolbox.registry import current

    for name, check in [("convnet-d2", lambda n: n.num_features == 128 * 2 * 2),
                        ("convnet-w32", lambda n: n.classifier.in_features == 32)]:
        net = current().architecture(name)(num_classes=10, in_channels=1, image_size=8)
        assert check(net)
