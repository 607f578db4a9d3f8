"""SP (Tung & Mori 2019, "Similarity-Preserving Knowledge Distillation"), as RepDistiller's Similarity
(distiller_zoo/SP.py) on the feature its train_distill hands it: the last group (feats[-2]). Each
network's batch Gram matrix of the flattened maps, every row L2-normalised, and the squared Frobenius
distance between the two divided by batch^2.

RepDistiller returns the loss as a one-element vector (``.view(-1, 1).sum(0)``); ours is the same
number as a scalar."""

from __future__ import annotations

import torch.nn.functional as F

from .base import Distiller


def _row_normalised_gram(f):
    f = f.reshape(f.shape[0], -1)
    return F.normalize(f @ f.t())  # dim 1: each sample's similarities to the batch, as the reference


class SP(Distiller):
    def forward(self, s_feats, t_feats, index=None):
        f_s, f_t = s_feats[-2], t_feats[-2]
        bsz = f_s.shape[0]
        diff = _row_normalised_gram(f_t) - _row_normalised_gram(f_s)
        return (diff * diff).sum() / (bsz * bsz)
