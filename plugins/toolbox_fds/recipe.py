"""Recipe schema of FDS (forward-mode hyperparameter learning with sharing)."""

from typing import Literal

from pydantic import Field

from toolbox.recipes import RecipeBase, Section


class Data(Section):
    dataset: str = "digits"
    batch_size: int = 128
    # carved from the train split with the run's seed (recorded in the run); never the test split
    val_fraction: float = Field(0.2, gt=0, lt=1)
    val_batch_size: int = 500
    # the final retraining uses train + validation, as the reference does
    retrain_on: Literal["train", "train+val"] = "train+val"


class Model(Section):
    arch: str = "mlp"
    kwargs: dict = {}


class Hyper(Section):
    num_lrs: int = Field(7, ge=1)  # K learning rates, each shared over 1/K of the horizon
    lr_init: float = 0.0
    momentum_init: float = 0.0
    weight_decay_init: float = 0.0
    lr_step: float = 0.1  # initial outer step sizes of the sign-based updates
    momentum_step: float = 0.1
    weight_decay_step: float = 3e-4
    step_decay: float = 0.5  # a step is multiplied by this when its hypergradient flips sign
    converged_fraction: float = 0.05  # stop when every step < this fraction of its hyperparameter
    grad_clamp: float | None = 3.0
    hz_clamp: float | None = 1.0


class FDSRecipe(RecipeBase):
    method: Literal["fds"] = "fds"
    data: Data = Data()
    model: Model = Model()
    hyper: Hyper = Hyper()
    inner_epochs: int = 10  # horizon of every inner loop (and of the retraining)
    outer_steps: int = 10  # at most; stops earlier when the steps have converged
    dtype: Literal["float32", "float64"] = "float32"
