"""Recipe schema of the sam method: classifier training with a ``sam:`` section and optional label noise."""

from typing import Literal

from toolbox.classifier_recipe import ClassifierData, ClassifierRecipe, Model
from toolbox.recipes import Float, Seed
from toolbox.sam import SAMSettings


class Data(ClassifierData):
    # symmetric label noise on the train split: this fraction of labels moved to a uniformly drawn
    # other class; drawn from label_noise_seed, so every training seed sees the same corrupted set
    label_noise: Float(ge=0, lt=1) = 0.0
    label_noise_seed: Seed = 0


class SAMRecipe(ClassifierRecipe):
    method: Literal["sam"] = "sam"
    data: Data = Data()
    model: Model = Model.model_construct(arch="mlp")  # a default: not checked against the registry at import
    # rho = 0 (and fisher off) trains with the base optimiser alone: the SGD baseline of the same loop
    sam: SAMSettings = SAMSettings()
