"""Recipe schema of mixup: validated by toolbox before the plugin runs (unknown keys are errors)."""

from typing import Literal

from toolbox.recipes import (
    ArchName,
    ArchSection,
    BatchSize,
    Count,
    DatasetName,
    Float,
    LearningRate,
    Momentum,
    RecipeBase,
    Section,
    WeightDecay,
)


class Data(Section):
    dataset: DatasetName = "digits"
    batch_size: BatchSize = 64


class Model(ArchSection):
    arch: ArchName = "mlp"
    kwargs: dict = {}


class Optim(Section):
    lr: LearningRate = 0.05
    momentum: Momentum = 0.9
    weight_decay: WeightDecay = 1e-4


class MixupRecipe(RecipeBase):
    method: Literal["mixup"] = "mixup"
    data: Data = Data()
    model: Model = Model()
    optim: Optim = Optim()
    alpha: Float(ge=0, le=100) = 0.2  # lambda ~ Beta(alpha, alpha); the paper uses 0.2 on ImageNet, 1.0 on CIFAR
    epochs: Count = 20
