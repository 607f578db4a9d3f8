"""Recipe schema of mixup: validated by toolbox before the plugin runs (unknown keys are errors)."""

from typing import Literal

from toolbox.classifier_recipe import Model, Optim
from toolbox.engine import BatchSource
from toolbox.recipes import Count, DatasetName, Float, RecipeBase


class Data(BatchSource):  # batch_size, loader, workers: read by toolbox.engine.make_batches
    dataset: DatasetName = "digits"


class MixupRecipe(RecipeBase):
    method: Literal["mixup"] = "mixup"
    data: Data = Data()
    model: Model = Model(arch="mlp")  # core's sections: arch + kwargs; SGD lr, momentum, weight_decay, nesterov
    optim: Optim = Optim(lr=0.05, weight_decay=1e-4)
    alpha: Float(ge=0, le=100) = 0.2  # lambda ~ Beta(alpha, alpha); the paper uses 0.2 on ImageNet, 1.0 on CIFAR
    epochs: Count = 20
