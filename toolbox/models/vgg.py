"""VGG with batch norm for CIFAR, as the distillation benchmarks use it (RepDistiller, models/vgg.py):
five blocks of 3x3 conv-BN-ReLU layers (the last ReLU of each block applied outside it, so a block
ends in its batch norm), max pooling between blocks, global average pooling and one linear layer
(the ImageNet VGG's fully connected layers removed). vgg8 is RepDistiller's configuration 'S' (one
conv per block); vgg11/13/16/19 are Simonyan & Zisserman's A/B/D/E.

The module names and initialisation are the reference's (convolutions normal with std sqrt(2 / (k*k*out)),
biases 0, batch norms 1 and 0, the linear layer normal with std 0.01), so its checkpoints load key for
key. As there, the pooling after block 3 happens only for 64x64 inputs (32x32 images reach block 4 at 4x4).
Feature taps: ``block1``..``block4`` after their ReLU (before it, the reference's preact features).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from .initialisation import normal_by_output

CONFIGS = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _block(widths: list[int], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        in_channels = w
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    # the reference's features are the blocks after their ReLU, its preact features before it
    feature_layers = ("relu:block1", "relu:block2", "relu:block3", "relu:block4")
    stem_layer, pooled_layer = "relu:block0", "classifier:in"
    preact_layers = ("block1", "block2", "block3", "block4")

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        if depth not in CONFIGS:
            raise ValueError(f"VGG depth is one of {', '.join(map(str, CONFIGS))}, got {depth}")
        cfg = CONFIGS[depth]
        self.image_size = image_size
        self.block0 = _block(cfg[0], in_channels)
        self.block1 = _block(cfg[1], cfg[0][-1])
        self.block2 = _block(cfg[2], cfg[1][-1])
        self.block3 = _block(cfg[3], cfg[2][-1])
        self.block4 = _block(cfg[4], cfg[3][-1])
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        normal_by_output(self)

    def forward(self, x):
        pool, h = F.max_pool2d, x.shape[2]
        x = pool(F.relu(self.block0(x)), 2)
        x = pool(F.relu(self.block1(x)), 2)
        x = F.relu(self.block2(x))
        x = pool(x, 2) if x.shape[-1] > 1 else x  # images under 8x8 would have nothing left to pool
        x = F.relu(self.block3(x))
        if h == 64:  # as the reference: one more halving for 64x64 inputs only
            x = pool(x, 2)
        x = F.relu(self.block4(x))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))
