"""Recipe schema of the sam method: supervised training, the ``sam:`` section, optional label noise."""

from typing import Literal

from pydantic import Field

from toolbox.recipes import RecipeBase, Section
from toolbox.sam import SAMSettings


class Data(Section):
    dataset: str = "digits"
    batch_size: int = 64
    augment: Literal["none", "crop", "crop_flip"] = "none"
    crop_padding: int = 4
    # symmetric label noise on the train split: this fraction of labels moved to a uniformly drawn
    # other class; drawn from label_noise_seed, so every training seed sees the same corrupted set
    label_noise: float = Field(0.0, ge=0.0, lt=1.0)
    label_noise_seed: int = 0


class Model(Section):
    arch: str = "mlp"
    kwargs: dict = {}


class Optim(Section):
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False


class Schedule(Section):
    kind: Literal["step", "cosine", "constant"] = "cosine"
    milestones: list[int] = []  # epochs, for kind=step
    gamma: float = 0.2


class SAMRecipe(RecipeBase):
    method: Literal["sam"] = "sam"
    data: Data = Data()
    model: Model = Model()
    optim: Optim = Optim()
    schedule: Schedule = Schedule()
    # rho = 0 (and fisher off) trains with the base optimiser alone: the SGD baseline of the same loop
    sam: SAMSettings = SAMSettings()
    epochs: int = 30
    eval_every: int = 1  # epochs
