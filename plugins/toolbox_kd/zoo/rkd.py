"""RKD (Park et al. 2019, "Relational Knowledge Distillation"), as RepDistiller's RKDLoss
(distiller_zoo/RKD.py) on the pooled vectors (feats[-1]): ``distance_weight`` times the smooth-L1 loss
between the two networks' pairwise-distance matrices, each divided by its mean positive entry, plus
``angle_weight`` times the smooth-L1 loss between their angle tensors (cosines of the angles at every
sample between the difference vectors to every other pair). The teacher's side is computed without
gradients, as the reference does."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Distiller


def _distances(e, eps: float = 1e-12):
    """Euclidean distances from squared norms (clamped at eps before the root), with an exact zero
    diagonal, as the reference's pdist."""
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * (e @ e.t())).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), dtype=d.dtype, device=d.device))


def _normalised_distances(e):
    d = _distances(e)
    return d / d[d > 0].mean()


def _angles(e):
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)


class RKD(Distiller):
    def forward(self, s_feats, t_feats, index=None):
        student = s_feats[-1].reshape(s_feats[-1].shape[0], -1)
        teacher = t_feats[-1].reshape(t_feats[-1].shape[0], -1)
        with torch.no_grad():
            t_d, t_angle = _normalised_distances(teacher), _angles(teacher)
        loss_d = F.smooth_l1_loss(_normalised_distances(student), t_d)
        loss_a = F.smooth_l1_loss(_angles(student), t_angle)
        return self.settings.distance_weight * loss_d + self.settings.angle_weight * loss_a
