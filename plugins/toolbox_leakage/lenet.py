"""The victim network of DLG/iDLG's reference code: LeNet with sigmoid activations and every weight
and bias drawn from U(-0.5, 0.5), which makes gradients smooth and informative to invert."""

import math

import torch.nn as nn


class LeNetSigmoid(nn.Module):
    def __init__(self, num_classes=10, in_channels=3, image_size=32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 12, kernel_size=5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=1), nn.Sigmoid(),
            nn.Flatten(),
        )
        side = math.ceil(math.ceil(image_size / 2) / 2)  # two stride-2 convolutions with padding 2
        self.fc = nn.Linear(12 * side * side, num_classes)  # 768 at 32x32, as in the reference
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.uniform_(m.weight, -0.5, 0.5)
                nn.init.uniform_(m.bias, -0.5, 0.5)

    def forward(self, x):
        return self.fc(self.body(x))
