"""NST (Huang & Wang 2017, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer"),
as RepDistiller's NSTLoss (distiller_zoo/NST.py): for each pair of group outputs (feats[1:-1]) the squared
MMD with the degree-2 polynomial kernel k(a, b) = (a.b)^2 between the two networks' channels, each
channel a vector over positions, L2-normalised; summed over the pairs.

Where the two maps differ in size the larger is average-pooled to the smaller's (square) size, as the
reference does; the channel counts may differ (the kernel compares channels with channels, never
matches them). The reference's full loss keeps the teacher-teacher term, a constant."""

from __future__ import annotations

import torch.nn.functional as F

from .base import Distiller, pool_to_smaller


def _poly_kernel_mean(a, b):
    """Mean over all channel pairs (i of b, j of a) of (a_j . b_i)^2."""
    return (b @ a.transpose(1, 2)).pow(2).mean()


def _nst_pair(f_s, f_t):
    f_s, f_t = pool_to_smaller(f_s, f_t)
    f_s = F.normalize(f_s.reshape(f_s.shape[0], f_s.shape[1], -1), dim=2)
    f_t = F.normalize(f_t.reshape(f_t.shape[0], f_t.shape[1], -1), dim=2)
    return (_poly_kernel_mean(f_t, f_t).detach() + _poly_kernel_mean(f_s, f_s)
            - 2 * _poly_kernel_mean(f_s, f_t))


class NST(Distiller):
    def forward(self, s_feats, t_feats, index=None):
        # zip, as the reference: with more groups on one side, the extra trailing groups go unused
        return sum(_nst_pair(f_s, f_t) for f_s, f_t in zip(s_feats[1:-1], t_feats[1:-1]))
