"""Recipe schema of the supervised method: classifier training, optionally on a condensed set."""

from typing import Literal

from toolbox.classifier_recipe import ClassifierData, ClassifierRecipe


class Data(ClassifierData):
    synthetic: str | None = None  # train on a condensed set (run dir or hf-hub:) instead of the real train split


class SupervisedRecipe(ClassifierRecipe):
    method: Literal["supervised"] = "supervised"
    data: Data = Data()
