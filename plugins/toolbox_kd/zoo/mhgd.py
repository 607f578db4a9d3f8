"""MHGD (Lee & Song 2019, "Graph-based Knowledge Distillation by Multi-head Attention Network", BMVC),
following the authors' TensorFlow code: sseung0703/KD_methods_with_TF, nets/Relation.py (MHGD,
Attention_head, Estimator, drop_head, kld_loss), nets/SVP.py (SVD_eid, Align_rsv, gradient_svd),
op_util.py (Optimizer_w_MHGD) and train_w_distill.py (init_epoch = 40); the MHGD repository points there.

Each group output (feats[1:-1], after its ReLU, as the reference's 'feat' collection) is compressed to
its first right singular vector (the teacher's) or its first ``student_vectors`` ones (the student's,
the best-aligned one picked and sign-matched to the teacher's). For consecutive groups a multi-head
attention network relates the samples' vectors of group i (senders) to those of group i-1 (receivers):
one B x B graph per head.

Stage 'mha' (teacher only, ``init_epochs``): the attention network and an estimator learn to rebuild
each teacher vector of group i from the previous group's vectors through the softmaxed graph with
randomly dropped heads (loss: 1 - cosine, mean over samples, summed over group pairs).
Distillation: the frozen network's graphs (batch norm on its running statistics) of teacher and student,
through tanh, matched by KL(student || teacher) over each row, summed over rows, heads and group pairs.

Its student optimiser clips the distillation gradient of each variable to the norm of that variable's
cross-entropy gradient (times a sigmoid warm-up over the epochs since distillation began): zoo/clip.py,
on by default (``loss.mhgd.clip_to_ce``; false: ``weight * term`` added like every zoo distiller).

Deviations from the reference:
- the stage's SGD uses the recipe's momentum and weight decay; the reference's MHA penalty
  5e-4 * sum(p^2) (gradient 1e-3 p) and Nesterov momentum 0.9 are its own recipe's.
- where student and teacher groups differ in width (the reference distils equal widths only: the
  attention weights are shared and the singular vectors aligned by dot product), the student's map goes
  through a 1x1 conv + batch norm to the teacher's width first, as the same authors' TF2 KD-SVD
  (Knowledge_distillation_via_TF2.0, distiller/KDSVD.py aux_layers); it trains with the student.
- the reference's near-square branch (2/3 < HW/C < 3/2) takes tf.svd of a stop-gradient copy, so such a
  student group gets no gradient, although it registers the custom SVD gradient for it; here every
  branch backpropagates through that custom gradient (none of the CIFAR ResNet/WRN groups is near-square).
- removenan after a division by a zero singular value becomes a division guarded against zero: the same
  values (the column is zero) without NaN gradients.
- the initialisers are the reference's (variance scaling, fan-out, factor 2, truncated normal with
  stddev sqrt(1.3 * 2 / fan_out)); batch norm as TF's (eps 1e-5, decay 0.9 = torch momentum 0.1).
- its defaults (8 heads, 4 student vectors, 40 stage epochs at lr 0.1) are for CIFAR-100 with ResNet
  teacher/student over 100 + 40 epochs, batch 128; kept as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from toolbox.errors import UsageError

from .base import Distiller, Stage, width_connector


def _l2_normalize(x, dim):
    """tf.nn.l2_normalize: x / sqrt(max(sum x^2, 1e-12))."""
    return x * torch.rsqrt(x.pow(2).sum(dim, keepdim=True).clamp_min(1e-12))


def _unit_columns(m):
    """Columns divided by their norms (a zero column stays zero, as the reference's removenan leaves it)."""
    n = m.norm(dim=1)
    return m / torch.where(n > 0, n, torch.ones_like(n)).unsqueeze(1), n


class _RightSingular(torch.autograd.Function):
    """x [B, HW, C] -> (s, u, v): the thin SVD computed as SVP.SVD_eid does (an SVD where HW and C are
    close, else the eigenvectors of the smaller Gram matrix), differentiated with SVP.gradient_svd,
    which reads dV only (dU and ds are dropped, as the reference's is) and zeroes 1/(s_i^2 - s_j^2) where
    singular values repeat."""

    @staticmethod
    def forward(ctx, x):
        hw, c = x.shape[1:]
        if 2 / 3 < hw / c < 3 / 2:
            u, s, vh = torch.linalg.svd(x, full_matrices=False)
            v = vh.transpose(1, 2)
        elif hw < c:
            u = torch.linalg.svd(x @ x.transpose(1, 2))[0]
            v, s = _unit_columns(x.transpose(1, 2) @ u)
        else:
            v = torch.linalg.eigh(x.transpose(1, 2) @ x)[1].flip(-1)  # descending, as flip_left_right
            u, s = _unit_columns(x @ v)
        ctx.save_for_backward(s, u, v)
        ctx.mark_non_differentiable(s, u)
        return s, u, v

    @staticmethod
    def backward(ctx, ds, du, dv):
        s, u, v = ctx.saved_tensors
        k = s.shape[1]
        eye = torch.eye(k, dtype=s.dtype, device=s.device).unsqueeze(0)
        s2 = s.pow(2)
        kt = ((1 - eye) / (s2.unsqueeze(2) - s2.unsqueeze(1) + eye)).transpose(1, 2)
        kt = torch.where(torch.isfinite(kt), kt, torch.zeros_like(kt))
        S = torch.diag_embed(s)

        def msym(m):
            return m + m.transpose(1, 2)

        if v.shape[1] > u.shape[1]:  # more channels than positions: the reference's left_grad, on x^T
            d = dv / (s + 1e-8).unsqueeze(1)
            inner = torch.diag_embed(torch.diagonal(v.transpose(1, 2) @ d, dim1=1, dim2=2))
            inner = inner + 2 * S @ msym(kt * (d.transpose(1, 2) @ (v @ S)))
            return ((d - v @ inner) @ u.transpose(1, 2)).transpose(1, 2)
        return 2 * u @ (S @ msym(kt * (v.transpose(1, 2) @ dv))) @ v.transpose(1, 2)


def right_singular_vectors(feature, n):
    """A [B, C, H, W] map -> its first ``n`` right singular vectors [B, C, n], each of unit length."""
    x = feature.flatten(2).transpose(1, 2)  # [B, HW, C], positions in the reference's NHWC order
    v = _RightSingular.apply(x)[2]
    return _l2_normalize(v[:, :, :n], 1)


def align(v_s, v_t):
    """SVP.Align_rsv: of the student's vectors [B, C, n], the one most (anti)parallel to the teacher's
    [B, C, 1], sign-matched to it -> [B, C, 1]."""
    cosine = v_s.transpose(1, 2) @ v_t
    best = cosine.abs().amax(1, keepdim=True) == cosine.abs()
    return v_s @ torch.where(best, torch.sign(cosine), torch.zeros_like(cosine))


def _tf_linear(d_in, d_out, bias=False):
    """tf.contrib fully_connected under the reference's arg_scope: variance scaling (fan-out, factor 2,
    truncated normal), no bias unless asked (then zeros)."""
    layer = nn.Linear(d_in, d_out, bias=bias)
    std = math.sqrt(1.3 * 2.0 / d_out)
    nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class AttentionHead(nn.Module):
    """Relation.Attention_head: senders (group i) and receivers (group i-1) embedded per head
    (fc without bias, batch norm), graph [heads, B, B] = sender . receiver."""

    def __init__(self, d_sender, d_receiver, dim, heads):
        super().__init__()
        self.dim, self.heads = dim, heads
        self.sender, self.sender_bn = _tf_linear(d_sender, dim * heads), nn.BatchNorm1d(dim * heads)
        self.receiver, self.receiver_bn = _tf_linear(d_receiver, dim * heads), nn.BatchNorm1d(dim * heads)

    def forward(self, k, q):
        b = k.shape[0]
        sender = self.sender_bn(self.sender(k)).view(b, self.dim, self.heads).permute(2, 0, 1)
        receiver = self.receiver_bn(self.receiver(q)).view(b, self.dim, self.heads).permute(2, 1, 0)
        return sender @ receiver


class Estimator(nn.Module):
    """Relation.Estimator: the previous group's vectors embedded (fc, batch norm, ReLU), mixed by each
    head's softmaxed graph with random heads dropped, concatenated over heads, mapped to the current
    group's width and normalised."""

    def __init__(self, d_in, d_out, heads):
        super().__init__()
        dim = (d_in + d_out) // 2
        self.heads = heads
        self.embed, self.bn = _tf_linear(d_in, dim), nn.BatchNorm1d(dim)
        self.out = _tf_linear(dim * heads, d_out, bias=True)

    def forward(self, x, graph):
        h, b = graph.shape[:2]
        graph = torch.softmax(graph, -1)
        noise = torch.randn(h, b, 1, dtype=graph.dtype, device=graph.device)
        graph = graph * (noise - noise.mean(0, keepdim=True) > 0).to(graph.dtype)  # drop_head
        x = F.relu(self.bn(self.embed(x)))
        x = (graph.reshape(h * b, b) @ x).view(h, b, -1).transpose(0, 1).reshape(b, -1)
        return _l2_normalize(self.out(x), -1)


class MHGD(Distiller):
    def __init__(self, settings, s_shapes, t_shapes, n_data):
        super().__init__(settings, s_shapes, t_shapes, n_data)
        s_groups, t_groups = s_shapes[1:-1], t_shapes[1:-1]
        if len(s_groups) != len(t_groups) or len(t_groups) < 2:
            raise UsageError(f"MHGD relates consecutive groups of student and teacher, which have {len(s_groups)} and "
                             f"{len(t_groups)}; pick architectures with as many groups (at least 2), or set "
                             "loss.student_layers/teacher_layers")
        widths = [t[1] for t in t_groups]
        self.n = settings.student_vectors
        self.connectors = nn.ModuleList(nn.Identity() if s[1] == c else width_connector(s[1], c)
                                        for s, c in zip(s_groups, widths))
        self.attention = nn.ModuleList(AttentionHead(widths[i], widths[i - 1], (widths[i] + widths[i - 1]) // 2,
                                                     settings.heads) for i in range(1, len(widths)))
        self.estimators = nn.ModuleList(Estimator(widths[i - 1], widths[i], settings.heads)
                                        for i in range(1, len(widths)))

    def train(self, mode=True):
        super().train(mode)
        # frozen after its stage: running statistics, as the reference's reused heads (is_training False)
        self.attention.eval()
        self.estimators.eval()
        return self

    def main_parameters(self):
        return list(self.connectors.parameters())

    def _teacher_vectors(self, t_feats):
        return [right_singular_vectors(f, 1).squeeze(2) for f in t_feats[1:-1]]

    def forward(self, s_feats, t_feats, index=None):
        v_t = self._teacher_vectors(t_feats)
        v_s = [align(right_singular_vectors(conn(f), self.n), t.unsqueeze(2)).squeeze(2)
               for conn, f, t in zip(self.connectors, s_feats[1:-1], v_t)]
        loss = 0.0
        for i, head in enumerate(self.attention, 1):
            g_t = torch.tanh(head(v_t[i], v_t[i - 1]))
            g_s = torch.tanh(head(v_s[i], v_s[i - 1]))
            log_s = torch.log_softmax(g_s, -1)
            loss = loss + (log_s.exp() * (log_s - torch.log_softmax(g_t, -1))).sum()
        return loss

    def stage_loss(self, s_feats, t_feats):
        """The reference's MHA_loss: each teacher vector rebuilt from the previous group's (1 - cosine)."""
        self.attention.train()  # batch statistics while it learns (is_training True in the reference)
        self.estimators.train()
        v = self._teacher_vectors(t_feats)
        loss = 0.0
        for i, (head, estimator) in enumerate(zip(self.attention, self.estimators), 1):
            rebuilt = estimator(v[i - 1], head(v[i], v[i - 1]))
            loss = loss + (1 - (rebuilt * v[i]).sum(-1)).mean()
        return loss

    def stage(self, student):
        return Stage("mha", self.settings.init_epochs, self.stage_loss,
                     parameters=list(self.attention.parameters()) + list(self.estimators.parameters()),
                     lr=self.settings.init_lr, needs_student=False)
