"""Recipe sections of plain classifier training, shared by methods that train one classifier with SGD
(supervised, sam, ...): each extends them with its own keys."""

from typing import Literal

from pydantic import field_validator, model_validator

from .engine import BatchSource, Loop
from .recipes import (
    MAX_STEPS,
    ArchName,
    ArchSection,
    Count,
    DataSource,
    Float,
    Int,
    LearningRate,
    Momentum,
    RecipeBase,
    Section,
    WeightDecay,
    increasing,
)
from .sam import SAMSettings


class ClassifierData(BatchSource, DataSource):  # batch_size, loader, workers: toolbox.engine.make_batches
    augment: Literal["none", "crop", "crop_flip"] = "none"
    crop_padding: Int(0, 1024) = 4


class Model(ArchSection):
    arch: ArchName = "wrn-16-2"
    kwargs: dict = {}


class Optim(Section):
    lr: LearningRate = 0.1
    momentum: Momentum = 0.9
    weight_decay: WeightDecay = 5e-4
    nesterov: bool = False


class Schedule(Section):
    kind: Literal["step", "cosine", "constant", "file"] = "cosine"
    milestones: list[Int(1, MAX_STEPS)] = []  # epochs, for kind=step
    gamma: Float(gt=0, le=1) = 0.2

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, ms):
        return increasing(ms)

    @model_validator(mode="after")
    def _file_exists(self):
        """kind=file reads its schedule when the recipe is validated: a wrong path fails before the run starts."""
        if self.kind == "file":
            from .engine import windowed_learning_rates

            windowed_learning_rates(self.file)
        return self
    # kind=file: learning rates over equal windows of training, from a schedule.json (e.g. learned by
    # `toolbox train fds`) or a run directory holding one; optim.lr is then only a positive placeholder
    file: str | None = None


class ClassifierRecipe(RecipeBase):
    data: ClassifierData = ClassifierData()
    model: Model = Model()
    optim: Optim = Optim()
    schedule: Schedule = Schedule()
    loop: Loop = Loop()  # gradient accumulation, clipping, how often the loss is read (toolbox.engine)
    sam: SAMSettings | None = None  # set: wrap SGD in SAM / ASAM / Fisher-SAM (toolbox.sam)
    epochs: Count = 30
    eval_every: Count = 1  # epochs

