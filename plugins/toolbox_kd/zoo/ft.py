"""FT (Kim et al. 2018, "Paraphrasing Complex Network: Network Compression via Factor Transfer"), as
RepDistiller's FactorTransfer, Paraphraser and Translator (distiller_zoo/FT.py, models/util.py) and its
'factor' branch: a paraphraser (a conv autoencoder without batch norm) first learns to reconstruct
the teacher's last group (helper/pretrain.py ``init``: MSE, the paraphraser alone); then, frozen, its
encoder gives the teacher's factor, a translator (the same encoder shape with batch norm) gives the
student's, and the term is the distance between their L2-normalised channel-mean maps."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from toolbox.errors import UsageError
from toolbox.models.cifar_resnet import CifarResNet
from toolbox.models.wrn import WideResNet

from .base import Distiller, Stage, pool_to_smaller

# RepDistiller's init stage runs at lr 0.01 for these students (its resnet8..110, 8x4, 32x4 and WRNs)
LOW_LR_STUDENTS = (CifarResNet, WideResNet)
LOW_LR = 0.01


def _encoder(c_in: int, c_out: int, batch_norm: bool) -> nn.Sequential:
    """Three 3x3 convs c_in -> c_in -> c_out -> c_out, each (batch norm and) LeakyReLU(0.1)."""
    layers = []
    for a, b in ((c_in, c_in), (c_in, c_out), (c_out, c_out)):
        layers += [nn.Conv2d(a, b, 3, 1, 1), *([nn.BatchNorm2d(b)] if batch_norm else []), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """Teacher map (C channels) -> factor (int(k C)) -> reconstruction (C), transposed convs back."""

    def __init__(self, channels: int, rate: float):
        super().__init__()
        factor = int(channels * rate)
        self.encoder = _encoder(channels, factor, batch_norm=False)
        layers = []
        for a, b in ((factor, factor), (factor, channels), (channels, channels)):
            layers += [nn.ConvTranspose2d(a, b, 3, 1, 1), nn.LeakyReLU(0.1)]
        self.decoder = nn.Sequential(*layers)

    def forward(self, x):
        return self.decoder(self.encoder(x))


class FT(Distiller):
    def __init__(self, settings, s_shapes, t_shapes, n_data):
        super().__init__(settings, s_shapes, t_shapes, n_data)
        t_channels = t_shapes[-2][1]
        if int(t_channels * settings.rate) < 1:
            raise UsageError(f"loss.ft.rate={settings.rate} leaves no factor channel of the teacher's {t_channels}; "
                             f"use a rate of at least {1 / t_channels:.3g}")
        self.paraphraser = Paraphraser(t_channels, settings.rate)
        self.translator = _encoder(s_shapes[-2][1], int(t_channels * settings.rate), batch_norm=True)

    def _factor(self, f):
        return F.normalize(f.pow(self.settings.p1).mean(1).flatten(1))

    def forward(self, s_feats, t_feats, index=None):
        # the paraphraser is frozen after its stage: RepDistiller runs it in eval mode, outside the optimiser
        self.paraphraser.eval()
        with torch.no_grad():
            f_t = self.paraphraser.encoder(t_feats[-2])
        f_s = self.translator(s_feats[-2])
        f_s, f_t = pool_to_smaller(f_s, f_t)
        d = self._factor(f_s) - self._factor(f_t)
        return d.abs().mean() if self.settings.p2 == 1 else d.pow(self.settings.p2).mean()

    def reconstruction_loss(self, s_feats, t_feats):
        t = t_feats[-2]
        return F.mse_loss(self.paraphraser(t), t)

    def stage(self, student):
        return Stage("paraphraser", self.settings.init_epochs, self.reconstruction_loss,
                     parameters=list(self.paraphraser.parameters()),
                     lr=LOW_LR if isinstance(student, LOW_LR_STUDENTS) else None, needs_student=False)

    def main_parameters(self):
        return list(self.translator.parameters())
