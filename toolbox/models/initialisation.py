"""The two weight initialisations the distillation benchmarks' reference models use, applied to every
layer of a module (RepDistiller: resnet and resnetv2 use the first, vgg and mobilenetv2 the second)."""

from __future__ import annotations

import math

import torch.nn as nn


def kaiming_fan_out(model: nn.Module) -> None:
    """Convolutions Kaiming normal (fan_out, ReLU); batch norms 1 and 0; linear layers left at torch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def normal_by_output(model: nn.Module) -> None:
    """Convolutions normal with std sqrt(2 / (k*k*out)) and zero bias; batch norms 1 and 0; linear layers
    normal with std 0.01 and zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
