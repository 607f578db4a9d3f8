"""Gradient-matching distances (Zhao, Mopuri & Bilen 2021), shared by dataset condensation and the
iDLG leakage audit: both make one set of gradients match another."""

from __future__ import annotations

import torch


def _layer_distance_ours(g_real, g_syn):
    """Sum over output rows of 1 - cos(row_real, row_syn); 1-D tensors (biases, norm affine) count 0."""
    shape = g_real.shape
    if len(shape) == 1:
        return g_real.new_zeros(())
    g_real = g_real.reshape(shape[0], -1)
    g_syn = g_syn.reshape(shape[0], -1)
    dots = (g_real * g_syn).sum(-1)
    norms = g_real.norm(dim=-1) * g_syn.norm(dim=-1) + 1e-6
    return (1 - dots / norms).sum()


def match_distance(g_real, g_syn, kind: str = "ours"):
    """Distance between two lists of per-parameter gradients.

    ours: the layer-wise row cosine distance of the DC paper; mse: sum of squared differences
    (the DLG/iDLG objective); cos: 1 - cosine of the flattened, concatenated gradients.
    """
    if kind == "ours":
        return sum(_layer_distance_ours(r, s) for r, s in zip(g_real, g_syn, strict=True))
    if kind == "mse":
        return sum(((s - r) ** 2).sum() for r, s in zip(g_real, g_syn, strict=True))
    if kind == "cos":
        r = torch.cat([g.reshape(-1) for g in g_real])
        s = torch.cat([g.reshape(-1) for g in g_syn])
        return 1 - (r * s).sum() / (r.norm() * s.norm() + 1e-6)
    raise ValueError(f"unknown gradient distance '{kind}'; valid: ours, mse, cos")
