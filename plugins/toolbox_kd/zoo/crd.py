"""CRD (Tian, Krishnan & Isola 2020, "Contrastive Representation Distillation"), as RepDistiller's
crd/criterion.py (CRDLoss, Embed, ContrastLoss), crd/memory.py (ContrastMemory) and the contrast
indices of dataset/cifar100.py (CIFAR100InstanceSample, is_sample True).

The student's and the teacher's pooled features are embedded (Linear, then L2 norm) and each is scored
against the other network's memory bank (one row per training sample) at its positive and ``nce_k``
negatives: exp(<row, embedding> / nce_t) / Z, with Z set once from the first batch. The term is the
NCE loss of both directions (Eq. 18). After scoring, the two banks' rows of the batch's own samples move
towards its embeddings (momentum ``nce_m``, then L2 norm), without gradients.

RepDistiller draws the contrast indices in its data loader; our batches carry only (x, y, index), so the
distiller draws them itself from the training labels and a run generator (``bind_training_set``)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from toolbox.errors import UsageError

from .base import Distiller

EPS = 1e-7  # ContrastLoss's


class Embed(nn.Module):
    """RepDistiller's crd Embed: flatten, Linear, divide by the L2 norm (no eps, as there)."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        x = self.linear(x.reshape(x.shape[0], -1))
        return x / x.pow(2).sum(1, keepdim=True).sqrt()


def contrast_loss(x, n_data):
    """ContrastLoss (Eq. 18) on scores ``x`` (batch, 1 + K): the positive against the noise m * Pn,
    Pn = 1 / n_data uniform, and the K negatives likewise; summed, over the batch size."""
    m = x.shape[1] - 1
    noise = m / n_data
    log_d1 = torch.log(x[:, 0] / (x[:, 0] + noise + EPS))
    log_d0 = torch.log(noise / (x[:, 1:] + noise + EPS))
    return -(log_d1.sum() + log_d0.sum()) / x.shape[0]


class CRD(Distiller):
    needs_index = True

    def __init__(self, settings, s_shapes, t_shapes, n_data):
        super().__init__(settings, s_shapes, t_shapes, n_data)
        if len(s_shapes[-1]) != 2 or len(t_shapes[-1]) != 2:
            raise UsageError("CRD embeds the pooled features (the last tap), which must be vectors; drop the "
                             "recipe's student_layers/teacher_layers or end them with the pooled layer")
        dim = settings.feat_dim
        self.n_data, self.k, self.t, self.m = n_data, settings.nce_k, settings.nce_t, settings.nce_m
        self.embed_s = Embed(s_shapes[-1][1], dim)
        self.embed_t = Embed(t_shapes[-1][1], dim)
        # ContrastMemory's banks: uniform in [-stdv, stdv], stdv = 1 / sqrt(dim / 3) (its first rows are
        # not unit vectors until a batch updates them); memory_s holds student embeddings, memory_t teacher's
        stdv = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory_s", torch.rand(n_data, dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_t", torch.rand(n_data, dim).mul_(2 * stdv).add_(-stdv))
        # the normalising constants Z of the student's and the teacher's scores, -1 until the first batch
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))
        self.generator = None
        # the training labels and, sorted by class, where each class's samples are (data, not state)
        for name in ("labels", "by_class", "class_start", "class_count"):
            self.register_buffer(name, None, persistent=False)

    def bind_training_set(self, labels, generator):
        labels = torch.as_tensor(labels).long().reshape(-1)
        if len(labels) != self.n_data:
            raise UsageError(f"CRD got {len(labels)} training labels for a memory of {self.n_data} samples")
        device = self.memory_s.device
        count = torch.bincount(labels)
        self.labels = labels.to(device)
        # RepDistiller's per-class lists: cls_positive[c] the samples of class c in index order, and
        # cls_negative[c] the other classes' lists concatenated in class order = this order minus block c
        self.by_class = torch.argsort(labels, stable=True).to(device)
        self.class_start = (torch.cumsum(count, 0) - count).to(device)
        self.class_count = count.to(device)
        self.generator = generator

    def contrast_indices(self, index, y):
        """CIFAR100InstanceSample's sample_idx for each row: its positive (exact: itself; relax: a sample
        of its class drawn uniformly), then nce_k samples of the other classes drawn uniformly, without
        replacement where the other classes hold at least nce_k samples (np.random.choice's replace =
        k > len(cls_negative)), with replacement otherwise."""
        g = self.generator
        dev = g.device
        y = y.to(dev)
        count, start = self.class_count.to(dev)[y], self.class_start.to(dev)[y]
        by_class = self.by_class.to(dev)
        if self.settings.mode == "exact":
            positive = index.to(dev)
        else:
            u = torch.rand(len(y), generator=g, device=dev, dtype=torch.float64)
            positive = by_class[start + (u * count).long().clamp_max(count - 1)]
        negatives = torch.empty(len(y), self.k, dtype=torch.long, device=dev)
        n_other = self.n_data - count
        distinct = n_other >= self.k
        if distinct.any():
            # a uniformly random k-subset in random order, as choice without replacement: the k smallest
            # of uniform keys, the own class's samples keyed past every other
            rows = distinct.nonzero().squeeze(1)
            keys = torch.rand(len(rows), self.n_data, generator=g, device=dev)
            keys.masked_fill_(self.labels.to(dev)[None, :] == y[rows, None], 2.0)
            negatives[rows] = keys.topk(self.k, 1, largest=False).indices
        if not distinct.all():
            rows = (~distinct).nonzero().squeeze(1)
            n = n_other[rows, None]
            u = torch.rand(len(rows), self.k, generator=g, device=dev, dtype=torch.float64)
            pos = (u * n).long().minimum(n - 1)  # a position in the other-class list, skipping block y
            negatives[rows] = by_class[pos + count[rows, None] * (pos >= start[rows, None])]
        return torch.cat([positive[:, None], negatives], 1).to(self.memory_s.device)

    def forward(self, s_feats, t_feats, index=None, contrast_idx=None):
        if index is None:
            raise UsageError("CRD needs each sample's index into the training set (the KD method passes it)")
        if contrast_idx is None:
            if self.generator is None:
                raise UsageError("CRD draws its negatives from the training labels: call bind_training_set first")
            contrast_idx = self.contrast_indices(index, self.labels[index])
        # the scores reach exp(1 / nce_t) = e^14 at the default, past float16's range: compute them in the
        # memory's precision whatever the engine's autocast
        dtype = self.memory_s.dtype
        with torch.autocast(self.memory_s.device.type, enabled=False):
            v_s = self.embed_s(s_feats[-1].to(dtype))
            v_t = self.embed_t(t_feats[-1].to(dtype))
            # each network's embedding against the other's memory rows (no gradient into the memory)
            out_s = torch.exp(torch.einsum("bkd,bd->bk", self.memory_t[contrast_idx], v_s) / self.t)
            out_t = torch.exp(torch.einsum("bkd,bd->bk", self.memory_s[contrast_idx], v_t) / self.t)
            with torch.no_grad():  # ContrastMemory sets Z once, from the first batch's mean score
                self.z_s.copy_(torch.where(self.z_s < 0, out_s.mean() * self.n_data, self.z_s))
                self.z_t.copy_(torch.where(self.z_t < 0, out_t.mean() * self.n_data, self.z_t))
            loss = contrast_loss(out_s / self.z_s, self.n_data) + contrast_loss(out_t / self.z_t, self.n_data)
            with torch.no_grad():  # as ContrastMemory after scoring: the batch's own rows move to its embeddings
                self._update(self.memory_s, index, v_s)
                self._update(self.memory_t, index, v_t)
        return loss

    def _update(self, memory, index, v):
        rows = memory[index] * self.m + v * (1 - self.m)
        memory.index_copy_(0, index, rows / rows.pow(2).sum(1, keepdim=True).sqrt())
