"""Recipe sections of plain classifier training, shared by methods that train one classifier with SGD
(supervised, sam, ...): each extends them with its own keys."""

from typing import Literal

from .engine import Loop
from .recipes import RecipeBase, Section
from .sam import SAMSettings
from .speed import Speed


class ClassifierData(Section):
    dataset: str = "digits"
    batch_size: int = 64
    augment: Literal["none", "crop", "crop_flip"] = "none"
    crop_padding: int = 4


class Model(Section):
    arch: str = "wrn-16-2"
    kwargs: dict = {}


class Optim(Section):
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False


class Schedule(Section):
    kind: Literal["step", "cosine", "constant", "file"] = "cosine"
    milestones: list[int] = []  # epochs, for kind=step
    gamma: float = 0.2
    # kind=file: learning rates over equal windows of training, from a schedule.json (e.g. learned by
    # `toolbox train fds`) or a run directory holding one; optim.lr is then only a positive placeholder
    file: str | None = None


class ClassifierRecipe(RecipeBase):
    data: ClassifierData = ClassifierData()
    model: Model = Model()
    optim: Optim = Optim()
    schedule: Schedule = Schedule()
    speed: Speed = Speed()  # mixed precision, channels_last, compile (toolbox.speed)
    loop: Loop = Loop()  # gradient accumulation, clipping, how often the loss is read (toolbox.engine)
    sam: SAMSettings | None = None  # set: wrap SGD in SAM / ASAM / Fisher-SAM (toolbox.sam)
    epochs: int = 30
    eval_every: int = 1  # epochs
