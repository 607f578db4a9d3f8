"""KD-SVD (Lee, Kim & Song 2018, "Self-supervised Knowledge Distillation Using Singular Value
Decomposition", ECCV), as RepDistiller's KDSVD (distiller_zoo/KDSVD.py) on the group outputs
(feats[1:-1]).

Per group, each network's map (batch, positions x channels) is decomposed by SVD; the teacher keeps its
first ``singular_vectors`` (k) right singular vectors, the student its first k + 3, each vector and the
kept singular values L2-normalised (non-finite entries zeroed first). Each teacher vector is matched by
the student vector with the largest |cosine| to it, sign-corrected; both sides are scaled by the
teacher's normalised singular values. For consecutive groups, an RBF exp(-(v_i - v_j)^2 / 8) between
every channel of one group's vectors and every channel of the previous group's gives a matrix per
network; the term is the summed squared difference of the student's and the (stopped) teacher's
matrices (non-finite entries zeroed), divided by the batch size, summed over the group pairs.

Which version: we follow RepDistiller. Its docstring cites sseung0703/SSKD_SVD, but its code is the
authors' later TensorFlow version (sseung0703/KD_methods_with_TF, nets/Shared.py KD_SVD with nets/SVP.py
SVD and Align_rsv), operation for operation. Where that version and RepDistiller differ:
- RepDistiller divides the sum by the batch size; the authors' sum is not divided.
- The authors add the term with weight 1 but clip its gradient, per variable, to the norm of the
  classification loss's gradient (times sigmoid(epoch): half in the first epoch, ~1 after a few); RepDistiller does not clip,
  and neither do we.
- The authors' TensorFlow SVD has a hand-written gradient (a 1e-8 guard on the singular values,
  non-finite entries zeroed); ours is PyTorch's SVD gradient, as RepDistiller's.
The paper's own code (sseung0703/SSKD_SVD, nets/Distillation.py RAS) differs further: k + 1 vectors on
both sides, alignment by gathering the argmax student vector, teacher signs flipped to the student's,
per-sample non-finite masking with batch reweighting, and tf.nn.l2_loss (half the sum of squares) times
sqrt(k). The newest (Knowledge_distillation_via_TF2.0, distiller/KDSVD.py) is another method again: a
trained 1x1 conv + batch norm maps the student's map to the teacher's width and the student's vectors
are its projection onto the teacher's 4 left singular vectors, with no alignment.
The default weight 1 is the authors' (both their trainers add the term unweighted); RepDistiller's
run script has no KD-SVD line.

The student's and teacher's vectors are compared channel by channel, so each group pair must have the
same channel count (RepDistiller's matmul fails otherwise). The SVD runs in float32 outside autocast:
half-precision SVD does not exist."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toolbox.errors import UsageError

from .base import Distiller


def _finite(x):
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _at_least_float32(x):
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _right_singular(feat, n: int):
    """(normalised first n singular values, normalised first n right singular vectors) of each sample's
    positions x channels matrix."""
    b, c, h, w = feat.shape
    x = feat.reshape(b, c, h * w).transpose(-2, -1)
    try:
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
    except torch.linalg.LinAlgError:
        # a diverged network's maps: NaN through the term, which the engine reports as a non-finite loss
        # in one line with its step, instead of a crash inside the SVD
        nan = torch.full((), float("nan"), dtype=x.dtype, device=x.device)
        s, vh = nan.expand(b, min(c, h * w)), nan.expand(b, min(c, h * w), c)
    s, v = _finite(s), _finite(vh.transpose(-2, -1))
    return F.normalize(s[:, :n], dim=1), F.normalize(v[:, :, :n], dim=1)


def _align(v_s, v_t):
    """Each teacher vector's best student vector by |cosine|, with the cosine's sign."""
    cosine = v_s.transpose(-2, -1) @ v_t
    best = cosine.abs().max(1, keepdim=True)[0]
    mask = torch.where(best == cosine.abs(), cosine.sign(), torch.zeros_like(cosine))
    return v_s @ mask


def _rbf(v, v_before):
    return torch.exp(-(v.unsqueeze(2) - v_before.unsqueeze(1)).pow(2) / 8)


class KDSVD(Distiller):
    def __init__(self, settings, s_shapes, t_shapes, n_data):
        super().__init__(settings, s_shapes, t_shapes, n_data)
        for g, (s, t) in enumerate(zip(s_shapes[1:-1], t_shapes[1:-1]), 1):
            if s[1] != t[1]:
                raise UsageError(f"KD-SVD matches singular vectors channel by channel, but group {g} has {s[1]} "
                                 f"channels in the student and {t[1]} in the teacher; pick a student as wide "
                                 "as the teacher (e.g. wrn-16-2 for a wrn-40-2 teacher)")

    def forward(self, s_feats, t_feats, index=None):
        k = self.settings.singular_vectors
        losses = []
        v_s_before = v_t_before = None
        with torch.autocast(s_feats[1].device.type, enabled=False):
            for f_s, f_t in zip(s_feats[1:-1], t_feats[1:-1]):
                s_t, v_t = _right_singular(_at_least_float32(f_t), k)
                _, v_s = _right_singular(_at_least_float32(f_s), k + 3)
                v_s = _align(v_s, v_t)
                s_t = s_t.unsqueeze(1)
                v_t, v_s = v_t * s_t, v_s * s_t
                if v_s_before is not None:
                    sq = (_rbf(v_s, v_s_before) - _rbf(v_t, v_t_before).detach()).pow(2)
                    losses.append(_finite(sq).sum())
                v_s_before, v_t_before = v_s, v_t
        return sum(losses) / s_feats[1].shape[0]
