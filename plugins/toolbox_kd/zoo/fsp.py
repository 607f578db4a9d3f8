"""FSP (Yim et al. 2017, "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization
and Transfer Learning"), as RepDistiller's FSP (distiller_zoo/FSP.py) and its 'fsp' branch: the flow
of solution procedure between two consecutive feature maps is their channel-by-channel Gram matrix
(averaged over positions); the student's matrices, over its stem and groups, are trained onto the
teacher's in an initialisation stage (helper/pretrain.py ``init``); distillation afterwards adds no
term (loops.py: ``loss_kd = 0``)."""

from __future__ import annotations

import torch.nn.functional as F

from toolbox.errors import UsageError

from .base import Distiller, Stage


def _names(n: int) -> list[str]:
    return ["stem"] + [f"group {k}" for k in range(1, n)]


def flow_matrices(feats) -> list:
    """For each consecutive pair (bottom, top): (N, C_top, C_bottom), the mean over positions of
    top_j * bottom_i, the larger map average-pooled to the smaller's size first."""
    out = []
    for bottom, top in zip(feats[:-1], feats[1:]):
        if bottom.shape[2] > top.shape[2]:
            bottom = F.adaptive_avg_pool2d(bottom, top.shape[2:])
        elif bottom.shape[2] < top.shape[2]:
            top = F.adaptive_avg_pool2d(top, bottom.shape[2:])
        out.append(top.flatten(2) @ bottom.flatten(2).transpose(1, 2) / bottom[0, 0].numel())
    return out


class FSP(Distiller):
    def __init__(self, settings, s_shapes, t_shapes, n_data):
        super().__init__(settings, s_shapes, t_shapes, n_data)
        s_maps, t_maps = s_shapes[:-1], t_shapes[:-1]
        if len(s_maps) != len(t_maps):
            raise UsageError(f"FSP pairs the feature maps one to one: the student has {len(s_maps)} (stem and groups), "
                             f"the teacher {len(t_maps)}; pick a student and teacher with as many stages")
        names = _names(len(s_maps))
        bad = [(n, s[1], t[1]) for n, s, t in zip(names, s_maps, t_maps) if s[1] != t[1]]
        if bad:
            where = ", ".join(f"{n} {s} vs {t}" for n, s, t in bad)
            raise UsageError(f"FSP compares the student's and teacher's maps channel by channel, but their widths "
                             f"differ (student vs teacher channels: {where}); pair networks of the same widths "
                             "(e.g. resnet20 from resnet56, wrn-16-2 from wrn-40-2) or pick another --loss")

    def flow_loss(self, s_feats, t_feats):
        """The mean squared difference of each pair of flow matrices, summed over the pairs."""
        s_flow, t_flow = flow_matrices(s_feats[:-1]), flow_matrices(t_feats[:-1])
        return sum((s - t).pow(2).mean() for s, t in zip(s_flow, t_flow))

    def forward(self, s_feats, t_feats, index=None):
        return None

    def stage(self, student):
        # RepDistiller trains the student's feature modules; its classifier gets no gradient from this loss
        return Stage("init", self.settings.init_epochs, self.flow_loss, parameters=list(student.parameters()))
