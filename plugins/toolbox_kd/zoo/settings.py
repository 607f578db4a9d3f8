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
    feat_dim: Int(1, 65536) = 128  # the embeddings' width, RepDistiller's --feat_dim


class VID(Section):
    weight: LossWeight = 1.0
    init_pred_var: Float(gt=0, le=80) = 5.0  # the Gaussians' starting variance, RepDistiller's VIDLoss
    eps: Float(gt=0, le=1) = 1e-5  # the variances' floor


class RKD(Section):
    weight: LossWeight = 1.0
    distance_weight: LossWeight = 25.0  # RepDistiller's RKDLoss w_d
    angle_weight: LossWeight = 50.0  # and w_a


class PKT(Section):
    weight: LossWeight = 30000.0


class AB(Section):
    weight: LossWeight = 1.0
    init_epochs: Count = 30


class FT(Section):
    weight: LossWeight = 200.0
    init_epochs: Count = 30


class FSP(Section):
    weight: LossWeight = 50.0
    init_epochs: Count = 30


class NST(Section):
    weight: LossWeight = 50.0


class CRD(Section):
    weight: LossWeight = 0.8


class KDSVD(Section):
    """The weight is the authors' (their trainers add the term unweighted); RepDistiller's run script
    has no KD-SVD line."""

    weight: LossWeight = 1.0
    singular_vectors: Int(1, 64) = 1  # the teacher's kept vectors (the student keeps 3 more), RepDistiller's k


class MHGD(Section):
    weight: LossWeight = 1.0


class IEP(Section):
    weight: LossWeight = 1.0
