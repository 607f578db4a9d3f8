"""The small networks of the distillation benchmarks' cross-architecture pairs, as RepDistiller
(HobbitLong/RepDistiller, models/) builds them for CIFAR, with its module names so its checkpoints load
key for key:

- MobileNetV2 (Sandler et al. 2018) with expansion T and width multiplier W; RepDistiller's
  "MobileNetV2" is T=6, W=0.5. Its CIFAR form keeps the stride-2 3x3 stem, keeps the 1x1 expansion
  even where T=1, and ends in a 1x1 conv to 1280 channels; convolutions are initialised normal with
  std sqrt(2 / (k*k*out)), the linear layer with std 0.01.
- ShuffleNetV1 (Zhang et al. 2018), groups 3, widths 240/480/960, 4/8/4 units, a 1x1 stem to 24 channels.
- ShuffleNetV2 (Ma et al. 2018), size 1: widths 116/232/464, 3/7/3 units after a downsampling unit, a 1x1
  stem to 24 channels and a 1x1 conv to 1024; both ShuffleNets at torch's default initialisation.

All pool their last map globally (the references' fixed pools cover the whole map of a 32x32 image).
Feature taps: MobileNetV2 ``blocks.1``, ``blocks.2``, ``blocks.4``, ``blocks.6`` (the reference's
features), the ShuffleNets ``layer1``..``layer3``; with RepDistiller's ``preact=True`` the ShuffleNets give
each stage's last unit before its final ReLU (``layerK.<last>.preact``, a stateless tap point).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .initialisation import normal_by_output


def channel_shuffle(x, groups: int):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


# --- MobileNetV2 ---------------------------------------------------------------------------------


def _conv_bn_relu(inp: int, out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out),
                         nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.residual = stride == 1 and inp == out
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out),
        )

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    feature_layers = ("blocks.1", "blocks.2", "blocks.4", "blocks.6")
    stem_layer, pooled_layer = "conv1", "classifier:in"
    preact_layers = feature_layers  # the reference gives the same list with preact=True
    # expansion t, channels c, units n, first stride s (the paper's table 2, CIFAR strides)
    SETTING = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1),
               (None, 160, 3, 2), (None, 320, 1, 1))

    def __init__(self, expansion: int = 6, width: float = 0.5, num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32):
        super().__init__()
        self.image_size = image_size
        channels = int(32 * width)
        self.conv1 = _conv_bn_relu(in_channels, channels, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in self.SETTING:
            out = int(c * width)
            units = []
            for stride in [s] + [1] * (n - 1):
                units.append(InvertedResidual(channels, out, stride, t or expansion))
                channels = out
            self.blocks.append(nn.Sequential(*units))
        last = int(1280 * width) if width > 1.0 else 1280
        self.conv2 = _conv_bn_relu(channels, last, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        normal_by_output(self)

    def forward(self, x):
        x = self.conv1(x)
        for block in self.blocks:
            x = block(x)
        x = self.conv2(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --- ShuffleNetV1 --------------------------------------------------------------------------------


class ShuffleUnitV1(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int):
        super().__init__()
        mid = out_planes // 4
        # the first unit after the 24-channel stem does not group its 1x1 conv (too few channels)
        self.first_groups = 1 if in_planes == 24 else groups
        self.stride = stride
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.preact = nn.Identity()  # a tap point for the unit's output before its ReLU

    def forward(self, x):
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(self.preact(torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1)))
        return F.relu(self.preact(out + x))


class ShuffleNetV1(nn.Module):
    feature_layers = ("layer1", "layer2", "layer3")
    stem_layer, pooled_layer = "relu:bn1", "linear:in"

    def __init__(self, widths=(240, 480, 960), units=(4, 8, 4), groups: int = 3, num_classes: int = 10,
                 in_channels: int = 3, image_size: int = 32):
        super().__init__()
        self.image_size = image_size
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        planes, stages = 24, []
        for width, n in zip(widths, units):
            layer = []
            for i in range(n):
                # a downsampling unit concatenates its pooled input: its branch makes the rest
                layer.append(ShuffleUnitV1(planes, width - (planes if i == 0 else 0), 2 if i == 0 else 1, groups))
                planes = width
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(widths[-1], num_classes)
        self.preact_layers = tuple(f"layer{k}.{n - 1}.preact" for k, n in zip((1, 2, 3), units))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --- ShuffleNetV2 --------------------------------------------------------------------------------


class ShuffleUnitV2(nn.Module):
    """Channel split: half passes through, half goes 1x1-BN-ReLU, 3x3 depthwise-BN, 1x1-BN-ReLU; then shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)
        self.preact = nn.Identity()  # a tap point for the unit's output before its ReLU and shuffle

    def forward(self, x):
        c = x.shape[1] // 2
        kept, x = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(self.bn2(self.conv2(out))))
        # RepDistiller's preact: both halves, unshuffled, before the branch's ReLU; the ReLU stays on
        # the branch alone (on the kept half it would cut the gradient where that is exactly zero)
        self.preact(torch.cat([kept, out], 1))
        return channel_shuffle(torch.cat([kept, F.relu(out)], 1), 2)


class DownUnitV2(nn.Module):
    """Both branches stride 2: depthwise-BN, 1x1-BN-ReLU | 1x1-BN-ReLU, depthwise-BN, 1x1-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x):
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(nn.Module):
    feature_layers = ("layer1", "layer2", "layer3")
    stem_layer, pooled_layer = "relu:bn1", "linear:in"

    def __init__(self, widths=(116, 232, 464, 1024), units=(3, 7, 3), num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32):
        super().__init__()
        self.image_size = image_size
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        planes, stages = 24, []
        for width, n in zip(widths[:3], units):
            stages.append(nn.Sequential(DownUnitV2(planes, width), *[ShuffleUnitV2(width) for _ in range(n)]))
            planes = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(widths[2], widths[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)
        # a stage is a downsampling unit and n units: its last is index n
        self.preact_layers = tuple(f"layer{k}.{n}.preact" for k, n in zip((1, 2, 3), units))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))
