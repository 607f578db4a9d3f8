"""The ZSKT generator: noise z -> images in the teacher's normalised input space."""

from __future__ import annotations

import torch.nn as nn


class Generator(nn.Module):
    """The paper's generator, sized by the dataset.

    For 32x32 images this is exactly the reference: Linear(z -> 128x8x8) -> BN -> up x2 ->
    conv 128 -> BN -> LeakyReLU -> up x2 -> conv 64 -> BN -> LeakyReLU -> conv C -> BN(C, affine)
    (1.05 M parameters). Other sizes keep the same layers and start at image_size / 4 (2x2 for the
    8x8 digits), so only the first linear layer shrinks. There is no tanh: the final BN puts the
    images directly in the normalised space the teacher was trained on.
    """

    def __init__(self, z_dim: int = 100, out_channels: int = 3, image_size: int = 32):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"the generator upsamples twice by 2: image size must be a multiple of 4, got {image_size}")
        init = image_size // 4
        self.z_dim = z_dim
        self.layers = nn.Sequential(
            nn.Linear(z_dim, 128 * init * init),
            nn.Unflatten(1, (128, init, init)),
            nn.BatchNorm2d(128),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 128, 3, stride=1, padding=1),
            nn.BatchNorm2d(128),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 64, 3, stride=1, padding=1),
            nn.BatchNorm2d(64),
            nn.LeakyReLU(0.2),
            nn.Conv2d(64, out_channels, 3, stride=1, padding=1),
            nn.BatchNorm2d(out_channels, affine=True),
        )

    def forward(self, z):
        return self.layers(z)
