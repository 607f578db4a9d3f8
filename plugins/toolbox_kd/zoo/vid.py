"""VID (Ahn et al. 2019, "Variational Information Distillation for Knowledge Transfer"), as
RepDistiller's VIDLoss (distiller_zoo/VID.py, from the authors' code) with the 'vid' branch of its
train_student.py: for each pair of group outputs (feats[1:-1]) a regressor of three bias-free 1x1
convolutions (student channels -> teacher channels -> teacher channels -> teacher channels, ReLU between)
predicts the mean of a Gaussian over the teacher's map, with one learned variance per teacher channel,
softplus(log_scale) + eps, initialised to ``init_pred_var``; the term is the Gaussian's negative log
likelihood (without its constant) averaged over all entries, summed over the pairs. Where the maps
differ in size the larger is average-pooled to the smaller's, as the reference does. Every parameter
trains with the student (RepDistiller adds the whole criterion to its trainable_list)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from toolbox.errors import UsageError

from .base import Distiller, pool_to_smaller


def _conv1x1(c_in, c_out):
    return nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)


class VIDPair(nn.Module):
    def __init__(self, s_channels: int, t_channels: int, init_pred_var: float, eps: float):
        super().__init__()
        mid = t_channels  # RepDistiller builds VIDLoss(s, t, t)
        self.regressor = nn.Sequential(_conv1x1(s_channels, mid), nn.ReLU(), _conv1x1(mid, mid), nn.ReLU(),
                                       _conv1x1(mid, t_channels))
        # the inverse of the softplus below, so the variance starts at init_pred_var
        self.log_scale = nn.Parameter(math.log(math.exp(init_pred_var - eps) - 1.0) * torch.ones(t_channels))
        self.eps = eps

    def forward(self, f_s, f_t):
        f_s, f_t = pool_to_smaller(f_s, f_t)
        mean = self.regressor(f_s)
        # log(1 + exp(.)) written out as the reference does (softplus differs only past exp's range)
        var = (torch.log(1.0 + torch.exp(self.log_scale)) + self.eps).view(1, -1, 1, 1)
        return (0.5 * ((mean - f_t) ** 2 / var + torch.log(var))).mean()


class VID(Distiller):
    def __init__(self, settings, s_shapes, t_shapes, n_data):
        super().__init__(settings, s_shapes, t_shapes, n_data)
        if settings.init_pred_var <= settings.eps:
            raise UsageError(f"loss.vid.init_pred_var={settings.init_pred_var} must exceed loss.vid.eps="
                             f"{settings.eps} (the variance is softplus(.) + eps); raise init_pred_var")
        self.pairs = nn.ModuleList(VIDPair(s[1], t[1], settings.init_pred_var, settings.eps)
                                   for s, t in zip(s_shapes[1:-1], t_shapes[1:-1]))

    def forward(self, s_feats, t_feats, index=None):
        return sum(pair(f_s, f_t) for pair, f_s, f_t in zip(self.pairs, s_feats[1:-1], t_feats[1:-1]))
