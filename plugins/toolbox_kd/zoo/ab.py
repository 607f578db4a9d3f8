"""AB (Heo et al. 2019, "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
Neurons"), as RepDistiller's ABLoss and Connector (distiller_zoo/AB.py, models/util.py) and its
'abound' branch: the student's group outputs before their last ReLU, mapped onto the teacher's by a
connector, learn on which side of zero the teacher's pre-activations lie (a squared hinge with a
margin). That is an initialisation stage (helper/pretrain.py ``init``, over the connector and the
student); distillation afterwards adds no term (loops.py: ``loss_kd = 0``)."""

from __future__ import annotations

import torch.nn as nn

from toolbox.errors import UsageError

from .base import Distiller, Stage
from .fitnet import ConvRegressor


def _connector(s_shape, t_shape) -> nn.Module:
    """Identity where channels and height agree, else RepDistiller's ConvReg without its ReLU."""
    if s_shape[1] == t_shape[1] and s_shape[2] == t_shape[2]:
        return nn.Identity()
    try:
        return ConvRegressor(s_shape, t_shape, relu=False)
    except UsageError:
        raise UsageError(f"AB cannot map a {tuple(s_shape[2:])} student group onto a {tuple(t_shape[2:])} teacher "
                         "group; pair a student whose maps are at least as large as the teacher's") from None


class AB(Distiller):
    preact = True

    def __init__(self, settings, s_shapes, t_shapes, n_data):
        super().__init__(settings, s_shapes, t_shapes, n_data)
        s_groups, t_groups = s_shapes[1:-1], t_shapes[1:-1]
        if len(s_groups) != len(t_groups):
            raise UsageError(f"AB pairs the groups one to one: the student has {len(s_groups)}, the teacher "
                             f"{len(t_groups)}; pick a student and teacher with as many stages")
        self.connector = nn.ModuleList(_connector(s, t) for s, t in zip(s_groups, t_groups))
        n = len(s_groups)
        # the last group counts 1, each earlier one half the next (ABLoss's 2 ** (i - n + 1))
        self.layer_weights = [2.0 ** (i - n + 1) for i in range(n)]

    def boundary_loss(self, s_feats, t_feats):
        """ABLoss summed over the groups: per group the summed squared hinge, weighted, / batch * 3 / 1000."""
        m = self.settings.margin
        total = 0.0
        for connect, w, s, t in zip(self.connector, self.layer_weights, s_feats[1:-1], t_feats[1:-1]):
            s = connect(s)
            # push the student past +m where the teacher's neuron fires, past -m where it does not
            off = (s + m).pow(2) * ((s > -m) & (t <= 0)).float()
            on = (s - m).pow(2) * ((s <= m) & (t > 0)).float()
            total = total + w * (off + on).sum() / s.shape[0] / 1000 * 3
        return total

    def forward(self, s_feats, t_feats, index=None):
        return None

    def stage(self, student):
        # RepDistiller trains the connector and the student's feature modules (get_feat_modules); the rest
        # of the student gets no gradient from this loss, so it does not move here either; one exception:
        # a WRN's final batch norm, whose output is the last pre-activation, trains here, not there
        return Stage("init", self.settings.init_epochs, self.boundary_loss,
                     parameters=list(student.parameters()) + list(self.connector.parameters()))

    def main_parameters(self):
        return []  # the connector serves the initialisation only
