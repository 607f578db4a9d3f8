"""Small networks for quick CPU recipes."""

import torch.nn as nn


class MLP(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, image_size=8, hidden=256, depth=2):
        super().__init__()
        layers, width = [nn.Flatten()], in_channels * image_size * image_size
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))
