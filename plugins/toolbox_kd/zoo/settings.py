"""Each distiller's recipe section (``loss.<name>``), defaults from its reference: RepDistiller's
scripts/run_cifar_distill.sh and train_student.py for the weights (its -b) and settings, the seed
authors' code for KD-SVD, MHGD and IEP. ``weight`` multiplies the distiller's term in
``ce_weight * CE [+ kd_weight * T^2 KL] + weight * term``."""

from __future__ import annotations

from typing import Literal

from toolbox.recipes import Count, Float, Int, LearningRate, LossWeight, Momentum, Section, Temperature


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
    """Tian et al. 2020: the pooled features embedded (Linear, L2 norm) and contrasted against memory banks
    of every training sample's embedding, RepDistiller's defaults (-b 0.8, its --feat_dim, --nce_k,
    --nce_t, --nce_m, --mode). ``mode`` 'exact': the positive is the sample itself; 'relax': any sample of
    its class. The ``nce_k`` negatives come from the other classes, without replacement where they number
    at least ``nce_k``, with replacement otherwise (a few-shot set)."""

    weight: LossWeight = 0.8
    feat_dim: Int(1, 65536) = 128
    nce_k: Int(1, 10**7) = 16384
    nce_t: Temperature = 0.07
    nce_m: Momentum = 0.5
    mode: Literal["exact", "relax"] = "exact"


class KDSVD(Section):
    """The weight is the authors' (their trainers add the term unweighted); RepDistiller's run script
    has no KD-SVD line."""

    weight: LossWeight = 1.0
    singular_vectors: Int(1, 64) = 1  # the teacher's kept vectors (the student keeps 3 more), RepDistiller's k
    # the authors' trainer clips the term's gradient per variable to CE's (op_util.py, as MHGD's, with
    # sigmoid(epoch) from the first epoch); RepDistiller, whose version this is, does not
    clip_to_ce: bool = False


class MHGD(Section):
    """Lee & Song 2019 (KD_methods_with_TF, nets/Relation.py and train_w_distill.py): its defaults, for
    CIFAR-100 ResNets trained 40 + 100 epochs at batch 128; kept. ``init_epochs`` trains the attention
    network on the teacher alone at ``init_lr`` (the reference's initial lr)."""

    # the reference's coefficient, under its per-variable clip of the term's gradient to CE's (clip_to_ce);
    # unclipped, the summed KL of a trained graph can outweigh CE (digits, 2 epochs: 0.18, clipped 0.56;
    # unclipped at weight 0.01: 0.89)
    weight: LossWeight = 1.0
    # op_util.py Optimizer_w_MHGD: each student variable's term gradient clipped to the norm of its CE
    # gradient times sigmoid(epochs distilled) (zoo/clip.py); false: the plain sum ce + weight * term
    clip_to_ce: bool = True
    heads: Int(1, 64) = 8  # num_head
    student_vectors: Int(1, 64) = 4  # SVD_eid(sfm, 4): the student's vectors the teacher's is aligned to
    init_epochs: Count = 40  # init_epoch
    init_lr: LearningRate = 0.1  # Learning_rate, constant before the decay points


class IEP(Section):
    """Lee & Song 2021 (sseung0703/IEPKT): the distillation term joins the cross-entropy with weight 1,
    its gradient clipped to CE's as MHGD's optimiser does (``clip_to_ce``); ``init_epochs`` trains the
    graph and attention networks and gathers the PCA statistics on the teacher first: train_w_distill.py's
    init_epoch, 20 before its 100 CIFAR epochs (kept for that schedule)."""

    weight: LossWeight = 1.0
    # Optimizer_w_IEP (unpublished op_util.py), taken to be Optimizer_w_MHGD of KD_methods_with_TF's
    # op_util.py: the term's gradient clipped per student variable to CE's (zoo/clip.py); false: the plain sum
    clip_to_ce: bool = True
    init_epochs: Count = 20
