"""What every distiller is: a module built from the shapes of the two feature lists, whose forward
gives its (unweighted) term for one batch, and optionally a stage trained before distillation.

The feature lists are RepDistiller's ``model(x, is_feat=True)``: ``[stem, group_1..group_k, pooled]``
(``preact = True``: the groups before their last ReLU, as AB reads them), so a distiller indexes them as
its reference does (feats[-1] the pooled vector, feats[1:-1] the groups, feats[-2] the last group)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Stage:
    """A stage trained before distillation (FitNet's hints, FT's paraphraser, AB's and FSP's
    initialisation): ``loss(s_feats, t_feats)`` minimised over ``parameters`` for ``epochs`` with SGD at a
    constant rate (``lr`` None: the recipe's), the recipe's momentum and weight decay, as RepDistiller's
    helper/pretrain.py does. ``needs_student`` False: the loss reads the teacher's features only."""

    name: str
    epochs: int
    loss: Callable
    parameters: list = field(default_factory=list)
    lr: float | None = None
    needs_student: bool = True


class Distiller(nn.Module):
    """Built as ``Distiller(settings, s_shapes, t_shapes, n_data)``: the recipe section, the shapes of
    the student's and teacher's feature lists (batch 2), and the number of training samples."""

    preact = False  # True: the group features are taken before their last ReLU (AB)
    # True: forward gets each sample's index into the training set (CRD's memory), and bind_training_set
    # is called once before training
    needs_index = False

    def __init__(self, settings, s_shapes: list[torch.Size], t_shapes: list[torch.Size], n_data: int):
        super().__init__()
        self.settings = settings

    def forward(self, s_feats: list, t_feats: list, index: torch.Tensor | None = None):
        """The term for one batch, or None where the method adds nothing after its stage (AB, FSP)."""
        raise NotImplementedError

    def bind_training_set(self, labels: torch.Tensor, generator: torch.Generator) -> None:
        """Where ``needs_index``: the training set's labels (row i: sample i's) and a run generator to draw
        samples of it with (CRD's negatives). The run checkpoints the generator's state with the distiller's,
        so a resumed run draws what the uninterrupted one would have."""
        raise NotImplementedError

    def stage(self, student) -> Stage | None:
        """The stage to train first, or None."""
        return None

    def main_parameters(self) -> list:
        """What the distillation stage trains besides the student (regressors, embeddings)."""
        return [p for p in self.parameters() if p.requires_grad]


def pool_to_smaller(f_s, f_t):
    """The larger of two square maps average-pooled to the smaller's size, as RepDistiller's AT, NST, VID
    and FT losses do before comparing a student's map with a teacher's of another resolution."""
    s_h, t_h = f_s.shape[2], f_t.shape[2]
    if s_h > t_h:
        return F.adaptive_avg_pool2d(f_s, (t_h, t_h)), f_t
    if s_h < t_h:
        return f_s, F.adaptive_avg_pool2d(f_t, (s_h, s_h))
    return f_s, f_t


def width_connector(c_in: int, c_out: int) -> nn.Module:
    """A 1x1 conv + batch norm from a student map's width to the teacher's: the seed authors' aux_layers
    (sseung0703/Knowledge_distillation_via_TF2.0, distiller/KDSVD.py), trained with the student, for their
    methods that compare maps channel by channel when the widths differ (MHGD, IEP)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
