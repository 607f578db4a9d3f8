"""Recipe schema of KD. Defaults are the few-shot reference's (SGD 0.1, a = 0.9, T = 4, AT x 1000)."""

from typing import Literal

from toolbox.engine import Loop
from toolbox.recipes import RecipeBase, Section
from toolbox.speed import Speed


class Teacher(Section):
    # a run directory, a model folder or hf-hub:org/name@rev; empty = train (or reuse) `recipe`
    source: str = ""
    recipe: str = "supervised/digits"


class Student(Section):
    arch: str = "wrn-16-1"
    kwargs: dict = {}


class Data(Section):
    dataset: str = "digits"
    shots: int = 0  # real images per class; 0 = the whole training split
    batch_size: int = 64
    augment: Literal["none", "crop", "crop_flip"] = "none"
    crop_padding: int = 4


class Loss(Section):
    """kind picks the terms; the weights are the reference's:
    ce: CE;  kd: (1-alpha) CE + 2 alpha T^2 KL_mean(T);  at: CE + at_weight * sum AT;  kd+at: both.
    at_weight multiplies the sum over layer pairs, as the AT authors' code does; the few-shot reference
    weights each of n pairs by beta * 3 / n, the same for the 3 WRN groups it runs AT on. With another
    number of layers, at_weight = beta * 3 / n reproduces it."""

    kind: Literal["ce", "kd", "at", "kd+at"] = "kd+at"
    alpha: float = 0.9
    temperature: float = 4.0
    # "mean" divides KL by batch*classes and is what the reference's 2*alpha*T^2 factor is tuned to;
    # "batchmean" is the textbook KL, used with alpha*T^2 (Hinton et al.)
    kl_reduction: Literal["mean", "batchmean"] = "mean"
    at_weight: float = 1000.0
    # module paths whose outputs are matched; empty = the architecture's feature_layers (WRN groups)
    student_layers: list[str] = []
    teacher_layers: list[str] = []


class Optim(Section):
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4


class Schedule(Section):
    """The full-data schedule. With shots M > 0, epochs and milestones are multiplied by
    N_train / (classes * M) and truncated, so a few-shot run takes as many SGD steps as full-data
    training. As in the reference, the decay at milestone m applies from the epoch after epoch m."""

    epochs: int = 200
    milestones: list[int] = [60, 120, 160]
    gamma: float = 0.2
    scale_with_shots: bool = True


class KDRecipe(RecipeBase):
    method: Literal["kd"] = "kd"
    teacher: Teacher = Teacher()
    student: Student = Student()
    data: Data = Data()
    loss: Loss = Loss()
    optim: Optim = Optim()
    schedule: Schedule = Schedule()
    speed: Speed = Speed()  # mixed precision, channels_last, compile (toolbox.speed); the teacher runs under them too
    loop: Loop = Loop()  # gradient accumulation, clipping, how often the loss is read (toolbox.engine)
    eval_every: int = 0  # epochs between test evaluations; 0 = about 20 evaluations per run
