"""IEP (Lee & Song 2021, "Interpretable Embedding Procedure Knowledge Transfer via Stacked Principal
Component Analysis and Graph Neural Network", AAAI), as the authors' TensorFlow code
sseung0703/IEPKT (nets/Distillation.py ``EKI``, ``MPNN``, ``Incremental_PCA``, ``PCA_Graph``,
``Attention_knowledge``; nets/SVP.py ``SVD_eid``; nets/WResNet.py for the feature maps;
train_w_distill.py for the initialisation phase).

Per feature map (the groups' outputs after their batch norm and ReLU): each teacher sample's map is
reduced to its first singular vectors (spatial U, channel V, the sign making max + min of V positive);
V is mapped onto a plane (``Plane_mapping``) and projected on an incremental PCA of the batch (half the
channels kept; running mean and components, rate 0.9). The student's map is read along the teacher's
spatial vector U and goes through the same mapping and PCA basis. Between consecutive maps a message
passing network (edges from the previous embedding, vertices the differences of the current one, two
gated messages) and a 7-head attention read the embedding procedure; the term is, summed over the
links, the L1 distance of the student's and teacher's messages, the KL divergence of their graph
readouts, and the KL divergence of their (tanh) attention maps.

The stage ``mha`` (the reference's ``init_epoch`` = 20 of ``train_op2``) trains those networks on the
teacher alone: the readout must reproduce the teacher's PCA graph (cosine similarities), and an
estimator must rebuild the current embedding from the previous one through the attention heads plus
the messages (random head dropout). It is also the only time the PCA statistics and the networks'
batch-norm statistics move: the reference runs the ``Distillation`` scope's update ops with
``train_op_mha`` only (op_util's ``Optimizer_w_MHGD``, which IEP's ``Optimizer_w_IEP`` mirrors), so the
PCA is a statistics pass folded into that stage and everything but the student is frozen afterwards.

Deviations:
- The reference's op_util.py is not published. We follow MHGD's (KD_methods_with_TF op_util.py,
  ``Optimizer_w_MHGD``, whose epoch and init_epoch arguments its ``Optimizer_w_IEP`` takes): the term has
  weight 1 (``loss.iep.weight``), its gradient clipped per student variable to the norm of the
  cross-entropy's times a sigmoid warm-up (zoo/clip.py, ``loss.iep.clip_to_ce``), and the networks
  train only in the stage. The stage uses the recipe's SGD (momentum, weight decay) at the recipe's
  constant rate, not Nesterov with 5e-4 * sum(w^2).
- The reference needs the student's and teacher's widths equal (a WRN-16-4 student of a WRN-40-4
  teacher). Where they differ, the student's map first goes through a 1x1 convolution and batch norm
  to the teacher's width, trained with the student: the adapter the same authors use for mismatched
  widths (sseung0703/Knowledge_distillation_via_TF2.0, distiller/KDSVD.py ``aux_layers``).
- The singular vectors come from one ``torch.linalg.svd`` instead of the reference's eigen-decomposition
  of X^T X or X X^T (chosen by the map's shape); after the reference's sign rule they are the same
  vectors. The stage reads the PCA and batch-norm statistics before the batch updates them (the
  reference does not order the reads and the assignments; the reads come first in practice).
- Batch norm's running variance is PyTorch's (unbiased); TensorFlow's moving average takes the biased one.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from toolbox.errors import UsageError

from .base import Distiller, Stage, width_connector

L2_EPS = 1e-12  # tf.nn.l2_normalize's epsilon, on the squared norm
PCA_RATE = 0.9  # Incremental_PCA: the batch mean's share of the running mean
ITERATIONS = 2  # MPNN's message passing steps (num_iter)
HEADS = 8  # Attention_knowledge's heads, one of them the MPNN's messages (extrinsic)
BN_MOMENTUM, BN_EPS = 0.1, 1e-5  # WResNet_arg_scope: decay 0.9, epsilon 1e-5


def l2_normalize(x, dim):
    return x * torch.rsqrt(x.pow(2).sum(dim, keepdim=True).clamp_min(L2_EPS))


def plane_mapping(x):
    """Unit vectors (rows) onto the plane tangent to the unit sphere at the all-ones direction."""
    d = x.shape[-1]
    center = x.new_ones(1, d) / math.sqrt(d)
    scale = 1 / torch.cos(torch.acos(x.sum(1, keepdim=True) / math.sqrt(d)) / 2).square()
    return (x + center) * scale - 2 * center


def cosine_graph(x):
    x = l2_normalize(x, -1)
    return x @ x.t()


def kld(x, y):
    """The reference's ``kld_loss``: KL(softmax(x) || softmax(y)) over the last axis, summed over all rows."""
    return (x.softmax(-1) * (x.log_softmax(-1) - y.log_softmax(-1))).sum()


def first_singular_vectors(fm):
    """[B, C, H, W] -> (U [B, HW, 1], V [B, C, 1]): each map's first singular pair as ``SVD_eid(x, 1)``,
    signed so that max + min of V is positive."""
    x = fm.flatten(2).transpose(1, 2)
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    u, v = l2_normalize(u[:, :, :1], 1), l2_normalize(vh[:, :1, :].transpose(1, 2), 1)
    sign = torch.sign(v.amax(1, keepdim=True) + v.amin(1, keepdim=True))
    return u * sign, v * sign


def _trunc_normal_fan_out(weight):
    # tcl.variance_scaling_initializer(mode='FAN_OUT'): truncated normal, stddev sqrt(1.3 * 2 / fan_out)
    std = math.sqrt(1.3 * 2.0 / weight.shape[0])
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class FcBn(nn.Module):
    """``batch_norm(fully_connected(x))`` without bias, over the last axis (statistics over all others);
    ``training`` is the reference's explicit ``is_training``, whatever the module's mode."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out, bias=False)
        self.bn = nn.BatchNorm1d(n_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        _trunc_normal_fan_out(self.fc.weight)

    def forward(self, x, training):
        y = self.fc(x)
        flat = F.batch_norm(y.reshape(-1, y.shape[-1]), self.bn.running_mean, self.bn.running_var,
                            self.bn.weight, self.bn.bias, training, BN_MOMENTUM, BN_EPS)
        return flat.reshape(y.shape)


class IncrementalPCA(nn.Module):
    """Running mean and the first half of the principal components of a feature's batches."""

    def __init__(self, dim):
        super().__init__()
        k = dim // 2
        self.register_buffer("mean", torch.zeros(1, dim))
        self.register_buffer("singular", torch.zeros(1, k))
        self.register_buffer("components", torch.zeros(dim, k))

    @torch.no_grad()
    def update(self, x):
        """One batch: the SVD of the centred batch stacked with the kept components (scaled by their
        singular values) and the shift of the mean, so the basis summarises all batches so far."""
        k = self.components.shape[1]
        kept = (self.singular * self.components).t()
        batch_mean = x.mean(0, keepdim=True)
        first = kept.sum() == 0
        previous = batch_mean if first else self.mean
        _, s, vh = torch.linalg.svd(torch.cat([x - batch_mean, kept, previous - batch_mean]), full_matrices=False)
        v = vh.t()
        v = v * torch.sign(v.amax(0, keepdim=True) + v.amin(0, keepdim=True))
        self.mean.copy_(self.mean * (1 - PCA_RATE) + batch_mean * PCA_RATE)
        self.singular.copy_(s[:k].unsqueeze(0))
        self.components.copy_(v[:, :k])

    def project(self, x):
        return (x - self.mean) @ self.components


class MPNN(nn.Module):
    """Edges from the previous embedding, vertices the pairwise differences of the current one; gated
    messages update the edges; the readout is the edges' mean, a [B, B] graph."""

    def __init__(self, prev_dim, dim):
        super().__init__()
        self.dim = dim
        self.edge = FcBn(prev_dim, dim)
        self.message = FcBn(dim + 1, dim)
        self.gate = FcBn(dim + 1, dim)

    def forward(self, x_b, x_f, training):
        e = l2_normalize(self.edge(x_f, training), -1)
        e = e.unsqueeze(1) * e.unsqueeze(0) * self.dim
        h = x_b.unsqueeze(1) - x_b.unsqueeze(0)
        messages = []
        for _ in range(ITERATIONS):  # one set of weights for every iteration (the reference's reuse)
            hm = torch.cat([h, e.mean(-1, keepdim=True)], -1)
            m = self.message(hm, training) * torch.sigmoid(self.gate(hm, training))
            e = e + m
            messages.append(m)
        return e.mean(-1), torch.cat(messages, -1)


class Attention(nn.Module):
    """``Attention_head``: per head, the [B, B] products of the current embedding (senders) with the
    previous one (receivers); and ``Estimator``, which rebuilds the current embedding from the previous
    one through those heads (softmax) and the messages, with random head dropout."""

    def __init__(self, prev_dim, dim):
        super().__init__()
        self.width = (prev_dim + dim) // 2
        self.heads = HEADS - 1  # the last head is the MPNN's messages
        self.sender = FcBn(dim, self.width * self.heads)
        self.receiver = FcBn(prev_dim, self.width * self.heads)
        self.est_in = FcBn(prev_dim, self.width)
        self.est_out = nn.Linear(self.width * HEADS, dim)
        _trunc_normal_fan_out(self.est_out.weight)
        nn.init.zeros_(self.est_out.bias)

    def forward(self, x_b, x_f, training):
        b = x_b.shape[0]
        senders = self.sender(x_b, training).reshape(b, self.width, self.heads).permute(2, 0, 1)
        receivers = self.receiver(x_f, training).reshape(b, self.width, self.heads).permute(2, 1, 0)
        return senders @ receivers

    def estimate(self, x_f, heads, extrinsic, noise):
        """``noise`` [HEADS, B, 1]: a head is kept for a sample where its draw is above the heads' mean."""
        b = heads.shape[1]
        g = torch.cat([heads.softmax(-1), extrinsic.detach().unsqueeze(0)])
        g = g * (noise - noise.mean(0, keepdim=True) > 0).to(g.dtype)
        x = torch.relu(self.est_in(x_f, True))
        x = (g.reshape(HEADS * b, b) @ x).reshape(HEADS, b, self.width)
        x = x.transpose(0, 1).reshape(b, HEADS * self.width)
        return l2_normalize(self.est_out(x), -1)


class Link(nn.Module):
    """What reads the step from one embedding to the next."""

    def __init__(self, prev_dim, dim):
        super().__init__()
        self.mpnn = MPNN(prev_dim, dim)
        self.attention = Attention(prev_dim, dim)


class IEP(Distiller):
    preact = True  # the groups' batch-normed outputs; the ReLU is applied here (nets/WResNet.py's 'feat')

    def __init__(self, settings, s_shapes, t_shapes, n_data):
        super().__init__(settings, s_shapes, t_shapes, n_data)
        s_maps, t_maps = s_shapes[1:-1], t_shapes[1:-1]
        if len(s_maps) != len(t_maps) or len(t_maps) < 2:
            raise UsageError(f"IEP links consecutive feature maps pairwise: the student has {len(s_maps)} groups, "
                             f"the teacher {len(t_maps)}; pick architectures with the same number (at least 2)")
        for k, (s, t) in enumerate(zip(s_maps, t_maps), 1):
            if s[-2:] != t[-2:]:
                raise UsageError(f"IEP reads the student's group {k} along the teacher's spatial singular vector, "
                                 f"so their sizes must match: {tuple(s[-2:])} vs {tuple(t[-2:])}; pick a student "
                                 "that downsamples like the teacher")
        # 1x1 conv + BN to the teacher's width where the widths differ (see the module docstring)
        self.adapters = nn.ModuleList(
            nn.Identity() if s[1] == t[1] else width_connector(s[1], t[1])
            for s, t in zip(s_maps, t_maps))
        dims = [t[1] // 2 for t in t_maps]
        self.pcas = nn.ModuleList(IncrementalPCA(t[1]) for t in t_maps)
        self.links = nn.ModuleList(Link(dims[k - 1], dims[k]) for k in range(1, len(dims)))

    def _own_dtype(self, feats):
        # the SVDs and the PCA run in the distiller's precision, not under the engine's autocast
        return [f.to(self.pcas[0].mean.dtype) for f in feats]

    def _teacher(self, t_feats, update_pca):
        """Per map: the teacher's spatial singular vectors, its PCA embedding, the PCA used."""
        out = []
        for fm, pca in zip(t_feats[1:-1], self.pcas):
            u, v = first_singular_vectors(torch.relu(fm))
            plane = plane_mapping(v.flatten(1))
            embedding = pca.project(plane)
            if update_pca:
                pca.update(plane)
            out.append((u, embedding, pca))
        return out

    def forward(self, s_feats, t_feats, index=None):
        s_feats, t_feats = self._own_dtype(s_feats), self._own_dtype(t_feats)
        terms = []
        prev = None
        for k, (sfm, adapter, (u, t_b, pca)) in enumerate(zip(s_feats[1:-1], self.adapters, self._teacher(t_feats, False))):
            sfm = adapter(torch.relu(sfm)).flatten(2)  # [B, C, HW]
            v_s = l2_normalize(sfm @ u, 1)
            s_b = pca.project(plane_mapping(v_s.flatten(1)))
            if prev is not None:
                link, (t_f, s_f) = self.links[k - 1], prev
                g_t, m_t = link.mpnn(t_b, t_f, False)
                g_s, m_s = link.mpnn(s_b, s_f, False)
                terms.append((m_s - m_t).abs().sum(-1).mean())
                terms.append(kld(g_t, g_s))
                a_t = link.attention(t_b, t_f, False)
                a_s = link.attention(s_b, s_f, False)
                terms.append(kld(torch.tanh(a_s), torch.tanh(a_t)))
            prev = (t_b, s_b)
        return torch.stack(terms).sum()

    def mha_loss(self, t_feats, noise=None):
        """The stage's loss on the teacher's features: graph readouts against the PCA graphs plus the
        estimators' cosine error; it also updates the PCAs and the batch-norm statistics. ``noise``:
        one [HEADS, B, 1] draw per link for the head dropout (standard normal by default)."""
        t_feats = self._own_dtype(t_feats)
        losses = []
        embeddings = [t_b for _, t_b, _ in self._teacher(t_feats, True)]
        for k, link in enumerate(self.links):
            t_f, t_b = embeddings[k], embeddings[k + 1]
            with torch.no_grad():  # the messages with the statistics from before this batch updates them
                _, m_t = link.mpnn(t_b, t_f, False)
            g_t, _ = link.mpnn(t_b, t_f, True)
            losses.append(kld(cosine_graph(t_b), g_t))
            heads = link.attention(t_b, t_f, True)
            draw = noise[k] if noise is not None else torch.randn(HEADS, t_b.shape[0], 1, device=t_b.device)
            estimate = link.attention.estimate(t_f, heads, m_t.mean(2) * ITERATIONS, draw)
            losses.append((1 - (t_b * estimate).sum(-1)).mean())
        return torch.stack(losses).sum()

    def stage(self, student):
        return Stage("mha", self.settings.init_epochs, lambda s, t: self.mha_loss(t),
                     parameters=list(self.links.parameters()), needs_student=False)

    def main_parameters(self):
        return list(self.adapters.parameters())
