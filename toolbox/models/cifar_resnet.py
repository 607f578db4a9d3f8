"""The CIFAR ResNets of the distillation benchmarks (He et al. 2016, section 4.2), as RepDistiller
(HobbitLong/RepDistiller, models/resnet.py) trains its teachers and students: resnet8 ... resnet110 at
widths 16/16/32/64, and resnet8x4 / resnet32x4 at four times that (32/64/128/256).

Post-activation basic blocks (conv-BN-ReLU-conv-BN, add, ReLU) with a 1x1-conv + BN shortcut where
the shape changes, three stages of (depth - 2) / 6 blocks at strides 1/2/2 after a 3x3 stem, then
global average pooling and a linear layer. The module names are RepDistiller's, so its published
checkpoints load key for key (``toolbox import``), and so are the initialisation (Kaiming normal,
fan_out, on convolutions; batch norms at 1 and 0; the linear layer at torch's default).

The reference pools with AvgPool2d(8), i.e. the whole 8x8 map a 32x32 image ends with; pooling the
whole map adaptively is the same there and also fits other image sizes (8x8 digits end at 2x2).
Feature taps for distillers: ``layer1``..``layer3`` (block outputs after their ReLU), and, as
RepDistiller's ``preact=True``, each stage's last residual sum before that ReLU (``layerK.<last>.preact``).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from .initialisation import kaiming_fan_out


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.preact = nn.Identity()  # a tap point for the sum before the ReLU (stateless: no checkpoint keys)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(self.preact(out + (x if self.downsample is None else self.downsample(x))))


class CifarResNet(nn.Module):
    feature_layers = ("layer1", "layer2", "layer3")
    stem_layer, pooled_layer = "relu:bn1", "fc:in"

    def __init__(self, depth: int, widths=(16, 16, 32, 64), num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"a CIFAR ResNet's depth is 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.image_size = image_size  # global average pooling: any size works
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._stage(widths[0], widths[1], n, 1)
        self.layer2 = self._stage(widths[1], widths[2], n, 2)
        self.layer3 = self._stage(widths[2], widths[3], n, 2)
        self.fc = nn.Linear(widths[3], num_classes)
        self.preact_layers = tuple(f"layer{k}.{n - 1}.preact" for k in (1, 2, 3))
        kaiming_fan_out(self)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_planes, planes, stride), *[BasicBlock(planes, planes) for _ in range(blocks - 1)])

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
