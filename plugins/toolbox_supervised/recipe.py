"""Recipe schema of the supervised method."""

from typing import Literal

from toolbox.recipes import RecipeBase, Section
from toolbox.sam import SAMSettings


class Data(Section):
    dataset: str = "digits"
    synthetic: str | None = None  # train on a condensed set (run dir or hf-hub:) instead of the real train split
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


class SupervisedRecipe(RecipeBase):
    method: Literal["supervised"] = "supervised"
    data: Data = Data()
    model: Model = Model()
    optim: Optim = Optim()
    schedule: Schedule = Schedule()
    sam: SAMSettings | None = None  # set: wrap SGD in SAM / ASAM / Fisher-SAM (toolbox.sam)
    epochs: int = 30
    eval_every: int = 1  # epochs
