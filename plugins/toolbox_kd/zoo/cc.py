"""CC (Peng et al. 2019, "Correlation Congruence for Knowledge Distillation"), as RepDistiller's
Correlation (distiller_zoo/CC.py, the authors' code it was given) with the 'correlation' branch of its
train_student.py: the pooled vectors (feats[-1]) of student and teacher each go through a trainable
linear embedding (models/util.py LinearEmbed: a Linear layer, no normalisation) to ``feat_dim``; the term
is the batch mean over consecutive sample pairs i, i+1 of sum_d |e_s - e_t|_i,d * |e_s - e_t|_{i+1},d.

Both embeddings train with the student (RepDistiller puts both in its trainable_list); the teacher's
features arrive detached, so the teacher's embedding learns only from this term."""

from __future__ import annotations

import torch.nn as nn

from .base import Distiller


class LinearEmbed(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        return self.linear(x.reshape(x.shape[0], -1))


class CC(Distiller):
    def __init__(self, settings, s_shapes, t_shapes, n_data):
        super().__init__(settings, s_shapes, t_shapes, n_data)
        self.embed_s = LinearEmbed(s_shapes[-1][1:].numel(), settings.feat_dim)
        self.embed_t = LinearEmbed(t_shapes[-1][1:].numel(), settings.feat_dim)

    def forward(self, s_feats, t_feats, index=None):
        delta = (self.embed_s(s_feats[-1]) - self.embed_t(t_feats[-1])).abs()
        return (delta[:-1] * delta[1:]).sum(1).mean()
