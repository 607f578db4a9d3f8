"""ConvNet of the dataset-condensation papers (Zhao et al. 2021; Gidaris & Komodakis 2018 before them).

depth x [conv3x3 (bias) -> norm -> activation -> pool] -> linear. Every DC/DSA/DM number is
measured with the default: width 128, depth 3, instance norm, ReLU, 2x2 average pooling.

The reference (DatasetCondensation networks.py) pads the first convolution by 3 for every
one-channel input, whatever its size: MNIST 28x28 becomes 32x32, digits 8x8 becomes 12x12 (12 -> 6
-> 3 -> 1 at depth 3). Its own size bookkeeping only maps 28 to 32, so for other one-channel sizes
its classifier or layer norms fit the real maps only by coincidence (digits at depth 3 does; digits
at depth 1 or 2, or with layer norm, fails there). Here every size is the real map size, which is
the reference's wherever the reference builds a working network.
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm")
ACTIVATIONS = ("relu", "sigmoid", "leakyrelu")
POOLINGS = ("avgpool", "maxpool", "none")


def _norm(kind: str, channels: int, size: int) -> nn.Module:
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels, affine=True)
    if kind == "layernorm":
        return nn.LayerNorm([channels, size, size], elementwise_affine=True)
    if kind == "instancenorm":
        # GroupNorm with one channel per group: instance norm with an affine map, as in the reference
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    raise ValueError(f"unknown norm '{kind}'; valid: {', '.join(NORMS)}")


def _activation(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU()
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    raise ValueError(f"unknown activation '{kind}'; valid: {', '.join(ACTIVATIONS)}")


def _pool(kind: str) -> nn.Module | None:
    if kind == "avgpool":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if kind == "maxpool":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    if kind == "none":
        return None
    raise ValueError(f"unknown pooling '{kind}'; valid: {', '.join(POOLINGS)}")


class ConvNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: int = 128,
                 depth: int = 3, norm: str = "instancenorm", act: str = "relu", pool: str = "avgpool"):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        size = image_size
        for d in range(depth):
            # one-channel input: padding 3 on the first conv, so MNIST's 28x28 meets the network as 32x32
            # like the three-channel datasets (the reference's rule is the channel count, not the size)
            padding = 3 if d == 0 and in_channels == 1 else 1
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=padding))
            size += 2 * padding - 2
            if norm != "none":
                layers.append(_norm(norm, width, size))
            layers.append(_activation(act))
            pooling = _pool(pool)
            if pooling is not None:
                layers.append(pooling)
                size //= 2
            if size < 1:
                raise ValueError(f"ConvNet depth {depth} pools a {in_channels}x{image_size}x{image_size} input below "
                                 f"1x1 at layer {d + 1}; use a depth of at most {d}")
            channels = width
        self.features = nn.Sequential(*layers)
        self.num_features = width * size * size
        self.classifier = nn.Linear(self.num_features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier (what distribution matching compares)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
