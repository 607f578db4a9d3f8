"""FitNet (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets"), as RepDistiller's HintLoss and
ConvReg: a convolutional regressor maps the student's hint layer (default the second group) onto the
teacher's, and the term is the mean squared error between them. The hint stage (the paper's first
stage; ``hint_epochs`` > 0) trains the student and the regressor on that term alone."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from toolbox.errors import UsageError

from .base import Distiller, Stage


class ConvRegressor(nn.Module):
    """Student map -> teacher map: a stride-2 conv where the student's is twice as large, a transposed
    conv where it is half, a valid conv that shrinks it otherwise; then batch norm and (``relu``) ReLU.
    AB's connector is the same without the ReLU (its loss reads the sign of a pre-activation)."""

    def __init__(self, s_shape, t_shape, relu: bool = True):
        super().__init__()
        self.relu = relu
        _, s_c, s_h, s_w = s_shape
        _, t_c, t_h, t_w = t_shape
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, 3, stride=2, padding=1)
        elif s_h * 2 == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, 4, stride=2, padding=1)
        elif s_h >= t_h:
            self.conv = nn.Conv2d(s_c, t_c, (1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise UsageError(f"FitNet cannot map a {s_h}x{s_w} student hint onto a {t_h}x{t_w} teacher hint; "
                             "pick another -o loss.fitnet.hint_layer")
        self.bn = nn.BatchNorm2d(t_c)

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class FitNet(Distiller):
    def __init__(self, settings, s_shapes, t_shapes, n_data):
        super().__init__(settings, s_shapes, t_shapes, n_data)
        k = settings.hint_layer
        if k >= len(s_shapes) - 1 or k >= len(t_shapes) - 1:
            raise UsageError(f"loss.fitnet.hint_layer={k} is past the last feature map; the student has "
                             f"{len(s_shapes) - 1} (0 = stem), the teacher {len(t_shapes) - 1}")
        self.layer = k
        self.regressor = ConvRegressor(s_shapes[k], t_shapes[k])

    def forward(self, s_feats, t_feats, index=None):
        return F.mse_loss(self.regressor(s_feats[self.layer]), t_feats[self.layer])

    def stage(self, student):
        if self.settings.hint_epochs == 0:
            return None
        return Stage("hint", self.settings.hint_epochs, lambda s, t: self(s, t),
                     parameters=list(student.parameters()) + list(self.regressor.parameters()))
