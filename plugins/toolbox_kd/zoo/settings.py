"""Each distiller's recipe section (``loss.<name>``), defaults from its reference: RepDistiller's
scripts/run_cifar_distill.sh and train_student.py for the weights (its -b) and settings, the seed
authors' code for KD-SVD, MHGD and IEP. ``weight`` multiplies the distiller's term in
``ce_weight * CE [+ kd_weight * T^2 KL] + weight * term``."""

from __future__ import annotations

from toolbox.recipes import Count, Float, Int, LossWeight, Section


class FitNet(Section):
    """Romero et al. 2015: a regressor maps the student's hint layer onto the teacher's, MSE between them.
    RepDistiller trains it jointly (-b 100, hint_layer 2); ``hint_epochs`` > 0 runs the paper's first
    stage before it: the student up to the hint layer and the regressor trained on the hint loss alone."""

    weight: LossWeight = 100.0
    hint_layer: Int(0, 4) = 2  # index into [stem, groups..., pooled], as RepDistiller's --hint_layer
    hint_epochs: Int(0, 10**6) = 0


class SP(Section):
    weight: LossWeight = 3000.0


class CC(Section):
    weight: LossWeight = 0.02


class VID(Section):
    weight: LossWeight = 1.0


class RKD(Section):
    weight: LossWeight = 1.0


class PKT(Section):
    weight: LossWeight = 30000.0


class AB(Section):
    """Heo et al. 2019: the student's pre-activations (through a connector) learn the teacher's
    activation boundaries in an initialisation stage of ``init_epochs``; distillation adds no term
    (RepDistiller's -b 1 multiplies a zero), so ``weight`` is kept for the schema only."""

    weight: LossWeight = 1.0
    init_epochs: Count = 30
    margin: Float(ge=0, le=1e3) = 1.0  # ABLoss's margin around the boundary


class FT(Section):
    """Kim et al. 2018: a paraphraser learns the teacher's last group by reconstruction for
    ``init_epochs`` (lr 0.01 for CIFAR ResNet and WRN students, else the recipe's, as RepDistiller),
    then a translator matches the student's factor to the paraphraser's."""

    weight: LossWeight = 200.0
    init_epochs: Count = 30
    rate: Float(gt=0, le=1) = 0.5  # the paraphrase rate k: factor channels = int(k * teacher channels)
    p1: Int(1, 8) = 2  # factor = L2-normalised channel mean of |f|^p1 (f^p1)
    p2: Int(1, 8) = 1  # distance between factors: mean |d| (1) or mean d^p2


class FSP(Section):
    """Yim et al. 2017: the student's flow matrices between consecutive feature maps trained onto the
    teacher's for ``init_epochs``; distillation adds no term (RepDistiller's -b 50 multiplies a zero),
    so ``weight`` is kept for the schema only."""

    weight: LossWeight = 50.0
    init_epochs: Count = 30


class NST(Section):
    weight: LossWeight = 50.0


class CRD(Section):
    weight: LossWeight = 0.8


class KDSVD(Section):
    weight: LossWeight = 1.0


class MHGD(Section):
    weight: LossWeight = 1.0


class IEP(Section):
    weight: LossWeight = 1.0
