"""The four-stage ResNets for CIFAR with a 64-channel 3x3 stem and no max pooling (the form
kuangliu/pytorch-cifar spread and RepDistiller's models/resnetv2.py keeps): ResNet-18/34 with basic
blocks, ResNet-50 with bottlenecks (expansion 4), widths 64/128/256/512 at strides 1/2/2/2, global
average pooling, one linear layer. RepDistiller's module names (``shortcut`` as a possibly empty
Sequential, ``linear``) and initialisation (Kaiming normal fan_out; batch norms 1 and 0), so its
ResNet50 teacher imports key for key. Feature taps: ``layer1``..``layer4``, and, as RepDistiller's
``preact=True``, each stage's last residual sum before its ReLU (``layerK.<last>.preact``).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from .initialisation import kaiming_fan_out


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class Basic(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)
        self.preact = nn.Identity()  # a tap point for the sum before the ReLU (stateless: no checkpoint keys)

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(self.preact(out + self.shortcut(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.shortcut = _shortcut(in_planes, planes * 4, stride)
        self.preact = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.preact(self.bn3(self.conv3(out)) + self.shortcut(x)))


DEPTHS = {18: (Basic, (2, 2, 2, 2)), 34: (Basic, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3))}


class WideStemResNet(nn.Module):
    feature_layers = ("layer1", "layer2", "layer3", "layer4")
    stem_layer, pooled_layer = "relu:bn1", "linear:in"

    def __init__(self, depth: int = 50, num_classes: int = 10, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"depth is one of {', '.join(map(str, DEPTHS))}, got {depth}")
        block, counts = DEPTHS[depth]
        self.image_size = image_size
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        planes, stages = 64, []
        for width, n, stride in zip((64, 128, 256, 512), counts, (1, 2, 2, 2)):
            layer = []
            for s in [stride] + [1] * (n - 1):
                layer.append(block(planes, width, s))
                planes = width * block.expansion
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512 * block.expansion, num_classes)
        self.preact_layers = tuple(f"layer{k}.{n - 1}.preact" for k, n in zip((1, 2, 3, 4), counts))
        kaiming_fan_out(self)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))
