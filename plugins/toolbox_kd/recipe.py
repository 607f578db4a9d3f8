"""Recipe schema of KD. Defaults are the few-shot reference's (SGD 0.1, a = 0.9, T = 4, AT x 1000)."""

from typing import Literal

from pydantic import field_validator

from toolbox.engine import Loop
from toolbox.recipes import (
    MAX_STEPS,
    ArchName,
    ArchSection,
    BatchSize,
    Count,
    DataSource,
    Float,
    Int,
    Interval,
    LearningRate,
    LossWeight,
    Momentum,
    Probability,
    RecipeBase,
    Section,
    Temperature,
    WeightDecay,
    increasing,
)
from toolbox.teachers import TeacherSection as Teacher

from . import zoo
from .zoo import settings as zoo_settings

# the composed losses --loss takes: the classic four, each zoo distiller alone and combined with KD
KINDS = ("ce", "kd", "at", "kd+at", *zoo.DISTILLERS, *(f"kd+{name}" for name in zoo.DISTILLERS))


class Student(ArchSection):
    arch: ArchName = "wrn-16-1"
    kwargs: dict = {}


class Data(DataSource):  # dataset (any reference), image_size, channels
    shots: Int(0, 10**6) = 0  # real images per class; 0 = the whole training split
    batch_size: BatchSize = 64
    augment: Literal["none", "crop", "crop_flip"] = "none"
    crop_padding: Int(0, 1024) = 4


class Loss(Section):
    """kind picks the terms; the weights are the reference's:
    ce: CE;  kd: (1-alpha) CE + 2 alpha T^2 KL_mean(T);  at: CE + at_weight * sum AT;  kd+at: both.
    at_weight multiplies the sum over layer pairs, as the AT authors' code does; the few-shot reference
    weights each of n pairs by beta * 3 / n, the same for the 3 WRN groups it runs AT on. With another
    number of layers, at_weight = beta * 3 / n reproduces it.

    A zoo distiller <name> (toolbox_kd.zoo): ce_weight * CE + loss.<name>.weight * its term, and with
    kd+<name> also kd_weight * T^2 KL_batchmean(T): RepDistiller's -r, -b and -a (its README combines
    a distiller with KD at -a 1)."""

    kind: Literal[KINDS] = "kd+at"
    alpha: Probability = 0.9
    temperature: Temperature = 4.0
    # "mean" divides KL by batch*classes and is what the reference's 2*alpha*T^2 factor is tuned to;
    # "batchmean" is the textbook KL, used with alpha*T^2 (Hinton et al.)
    kl_reduction: Literal["mean", "batchmean"] = "mean"
    at_weight: LossWeight = 1000.0
    # module paths whose outputs are matched; empty = the architecture's feature_layers (WRN groups)
    student_layers: list[str] = []
    teacher_layers: list[str] = []
    # maps of different sizes: pool the larger to the smaller (RepDistiller's Attention, which its cross-type
    # pairs need) instead of refusing (the AT authors' code matches equal sizes only)
    at_pool: bool = False
    ce_weight: LossWeight = 1.0  # zoo kinds: RepDistiller's -r
    kd_weight: LossWeight = 1.0  # kd+<name>: RepDistiller's -a
    fitnet: zoo_settings.FitNet = zoo_settings.FitNet()
    sp: zoo_settings.SP = zoo_settings.SP()
    cc: zoo_settings.CC = zoo_settings.CC()
    vid: zoo_settings.VID = zoo_settings.VID()
    rkd: zoo_settings.RKD = zoo_settings.RKD()
    pkt: zoo_settings.PKT = zoo_settings.PKT()
    ab: zoo_settings.AB = zoo_settings.AB()
    ft: zoo_settings.FT = zoo_settings.FT()
    fsp: zoo_settings.FSP = zoo_settings.FSP()
    nst: zoo_settings.NST = zoo_settings.NST()
    crd: zoo_settings.CRD = zoo_settings.CRD()
    kd_svd: zoo_settings.KDSVD = zoo_settings.KDSVD()
    mhgd: zoo_settings.MHGD = zoo_settings.MHGD()
    iep: zoo_settings.IEP = zoo_settings.IEP()


class Optim(Section):
    lr: LearningRate = 0.1
    momentum: Momentum = 0.9
    weight_decay: WeightDecay = 5e-4


class Schedule(Section):
    """The full-data schedule. With shots M > 0, epochs and milestones are multiplied by
    N_train / (classes * M) and truncated, so a few-shot run takes as many SGD steps as full-data
    training. As in the reference, the decay at milestone m applies from the epoch after epoch m."""

    epochs: Count = 200
    milestones: list[Int(1, MAX_STEPS)] = [60, 120, 160]
    gamma: Float(gt=0, le=1) = 0.2
    scale_with_shots: bool = True

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, ms):
        return increasing(ms)


class KDRecipe(RecipeBase):
    method: Literal["kd"] = "kd"
    teacher: Teacher = Teacher()
    student: Student = Student()
    data: Data = Data()
    loss: Loss = Loss()
    optim: Optim = Optim()
    schedule: Schedule = Schedule()
    loop: Loop = Loop()  # gradient accumulation, clipping, how often the loss is read (toolbox.engine)
    eval_every: Interval = 0  # epochs between test evaluations; 0 = about 20 evaluations per run
