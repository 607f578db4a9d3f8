"""ConvNet of the condensation papers: every map size against the reference's rule, variants,
default init, embed."""

import pytest
import torch
from torch import nn

from toolbox.models.convnet import ConvNet

WIDTH = 128


def reference_make_layers(channel: int, im_size: int, depth: int, norm: str) -> dict:
    """Our transcription of DatasetCondensation networks.py, ConvNet._make_layers, at width 128 with
    2x2 pooling. Two size rules live there: the layers themselves (first conv padded by 3 when
    ``channel == 1``, every other conv by 1; kernel 3, so a conv adds 2 * padding - 2) decide the real
    map sizes, while the bookkeeping ``shape_feat`` (starts at the image size, 28 replaced by 32,
    halved at each pooling) sizes the layer norms and the classifier (``net_width * h * w`` after the
    loop). The network works only where both agree."""
    real, book = im_size, (32 if im_size == 28 else im_size)
    maps, norm_shapes, works = [], [], True
    for d in range(depth):
        padding = 3 if channel == 1 and d == 0 else 1
        real += 2 * padding - 2
        maps.append(("conv", real))
        if norm != "none":
            maps.append(("norm", real))
            norm_shapes.append((WIDTH, book, book))
            works &= norm != "layernorm" or book == real  # LayerNorm([128, h, w]) rejects any other map
        real //= 2
        book //= 2
        works &= real >= 1  # a 2x2 pool of a 1x1 map has no output
        maps.append(("pool", real))
    num_feat = WIDTH * book * book
    works &= num_feat == WIDTH * real * real  # nn.Linear(num_feat, classes) on the flattened features
    return {"maps": maps, "norm_shapes": norm_shapes, "num_feat": num_feat, "works": works}


def observed_maps(net: ConvNet, channels: int, size: int) -> tuple[list, torch.Tensor]:
    """(kind, side) of every conv, norm and pool output of ``net``, recorded by forward hooks."""
    kinds = {nn.Conv2d: "conv", nn.GroupNorm: "norm", nn.LayerNorm: "norm", nn.AvgPool2d: "pool"}
    seen = []

    def hook(module, inputs, output):
        assert output.shape[2] == output.shape[3]
        seen.append((kinds[type(module)], output.shape[2]))

    for m in net.features:
        if type(m) in kinds:
            m.register_forward_hook(hook)
    x = torch.randn(1, channels, size, size)
    return seen, net.embed(x)


SHAPES = [(1, 8), (1, 28), (3, 32), (3, 64)]
# where the reference builds a network that runs: everything but digits (1x8x8) at depth 1, 2 and 4,
# and digits with layer norm at all (its first LayerNorm is [128, 8, 8], the map 12x12)
REFERENCE_FAILS = {(1, 8, d, n) for d in (1, 2, 4) for n in ("instancenorm", "layernorm")} | {(1, 8, 3, "layernorm")}


@pytest.mark.parametrize("norm", ["instancenorm", "layernorm"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("channels,size", SHAPES)
def test_every_map_size_follows_the_reference_rule(channels, size, depth, norm):
    ref = reference_make_layers(channels, size, depth, norm)
    assert ref["works"] == ((channels, size, depth, norm) not in REFERENCE_FAILS)
    if ref["maps"][-1][1] < 1:  # pooled below 1x1: the reference cannot run it, and we refuse to build it
        with pytest.raises(ValueError, match="below 1x1"):
            ConvNet(10, channels, size, depth=depth, norm=norm)
        return
    net = ConvNet(10, channels, size, depth=depth, norm=norm)
    seen, features = observed_maps(net, channels, size)
    assert seen == ref["maps"]  # the real map after every conv, norm and pool, as the reference's layers make them
    side = ref["maps"][-1][1]
    assert net.num_features == features.shape[1] == WIDTH * side * side == net.classifier.in_features
    if ref["works"]:
        assert net.num_features == ref["num_feat"]
        if norm == "layernorm":
            assert [tuple(m.normalized_shape) for m in net.features if isinstance(m, nn.LayerNorm)] == ref["norm_shapes"]


def test_digits_maps_are_12_6_3_1_at_the_default_depth():
    net = ConvNet(10, 1, 8)
    seen, features = observed_maps(net, 1, 8)
    assert [s for kind, s in seen if kind == "pool"] == [6, 3, 1]
    assert seen[0] == ("conv", 12) and net.features[0].padding == (3, 3)
    assert features.shape == (1, 128) and net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("size,padded", [(8, 12), (16, 20), (28, 32), (32, 36)])
def test_every_one_channel_input_is_padded_by_three_and_three_channels_by_one(size, padded):
    one = ConvNet(10, 1, size, depth=1, width=8)
    assert one.features[0].padding == (3, 3) and one.features[0](torch.randn(1, 1, size, size)).shape[-1] == padded
    three = ConvNet(10, 3, size, depth=1, width=8)
    assert three.features[0].padding == (1, 1) and three.features[0](torch.randn(1, 3, size, size)).shape[-1] == size
    for net, c in ((one, 1), (three, 3)):
        x = torch.randn(2, c, size, size)
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
    assert net.num_features == 16 * 12 * 12 and any(isinstance(m, nn.Sigmoid) for m in net.modules())
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

    for name, check in [("convnet-d2", lambda n: n.num_features == 128 * 3 * 3),  # 8 -> 12 -> 6 -> 3
                        ("convnet-w32", lambda n: n.classifier.in_features == 32)]:
        net = current().architecture(name)(num_classes=10, in_channels=1, image_size=8)
        assert check(net)
