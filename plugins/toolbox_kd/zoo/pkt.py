"""PKT (Passalis & Tefas 2018, "Learning Deep Representations with Probabilistic Knowledge
Transfer"), as RepDistiller's PKT: the pooled features' cosine similarities, shifted to [0, 1] and
normalised per row into conditional probabilities, matched by KL divergence (mean over the batch^2
entries)."""

from __future__ import annotations

import torch

from .base import Distiller

EPS = 1e-7


def _conditional(f):
    f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + EPS)
    f = torch.nan_to_num(f, nan=0.0)  # the reference zeroes NaNs (an all-zero row over a zero norm)
    sim = (f @ f.t() + 1.0) / 2.0
    return sim / sim.sum(1, keepdim=True)


class PKT(Distiller):
    def forward(self, s_feats, t_feats, index=None):
        p_s, p_t = _conditional(s_feats[-1]), _conditional(t_feats[-1])
        return (p_t * torch.log((p_t + EPS) / (p_s + EPS))).mean()
