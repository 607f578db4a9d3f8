"""Pre-activation WideResNet-d-k (Zagoruyko & Komodakis 2016), as used by the KD/AT/ZSKT papers.

Follows the widely shared "xternalz" implementation the papers' teachers were trained with, so
parameter counts and attention maps match theirs: a 3x3 stem to 16 channels, three groups of
(d-4)/6 basic blocks at widths 16k/32k/64k with strides 1/2/2, then BN-ReLU-global average pool-linear.
The three group outputs (raw residual sums) are exposed for attention transfer.
"""

from __future__ import annotations

import math

import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity or 1x1-conv shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = None if in_planes == out_planes else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = F.relu(self.bn2(out))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        # when the width changes, the shortcut sees the pre-activated input (as in the reference code)
        residual = x if self.shortcut is None else self.shortcut(pre)
        return residual + out


class WideResNet(nn.Module):
    feature_layers = ("group1", "group2", "group3")
    # the rest of RepDistiller's feature list (see toolbox_kd.features): its stem, its pooled vector, and
    # the pre-activations of the group outputs (each next batch norm's output, as its preact=True gives)
    stem_layer, pooled_layer = "conv1", "fc:in"
    preact_layers = ("group2.0.bn1", "group3.0.bn1", "bn")

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32, dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        # image_size is part of the registry's uniform constructor; global average pooling makes the
        # network independent of it (8x8 digits end at 2x2, 32x32 images at the papers' 8x8)
        self.image_size = image_size
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.group1 = self._group(n, widths[0], widths[1], 1, dropout)
        self.group2 = self._group(n, widths[1], widths[2], 2, dropout)
        self.group3 = self._group(n, widths[2], widths[3], 2, dropout)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        self._init_weights()

    @staticmethod
    def _group(n: int, in_planes: int, out_planes: int, stride: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(*[BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropout)
                               for i in range(n)])

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward_features(self, x):
        """-> (logits, [group1, group2, group3] outputs)."""
        g1 = self.group1(self.conv1(x))
        g2 = self.group2(g1)
        g3 = self.group3(g2)
        out = F.relu(self.bn(g3))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out), [g1, g2, g3]

    def forward(self, x):
        return self.forward_features(x)[0]
