"""Recipe schema of FDS (forward-mode hyperparameter learning with sharing)."""

from typing import Literal

from pydantic import field_validator

from toolbox.recipes import (
    MAX_STEPS,
    ArchName,
    ArchSection,
    BatchSize,
    Count,
    DataSource,
    Float,
    Int,
    Momentum,
    RecipeBase,
    Section,
    WeightDecay,
)

EXACT = "its hypergradients are forward-mode derivatives through the whole unrolled training (its precision is the recipe's dtype)"


class Data(DataSource):  # dataset (any reference), image_size, channels
    batch_size: BatchSize = 128
    # carved from the train split with the run's seed (recorded in the run); never the test split
    val_fraction: Float(gt=0, lt=1) = 0.2
    val_batch_size: BatchSize = 500
    # the final retraining uses train + validation, as the reference does
    retrain_on: Literal["train", "train+val"] = "train+val"


class Model(ArchSection):
    arch: ArchName = "mlp"
    kwargs: dict = {}


class Hyper(Section):
    num_lrs: Int(1, MAX_STEPS) = 7  # K learning rates, each shared over 1/K of the horizon
    lr_init: Float(ge=0, le=10) = 0.0
    momentum_init: Momentum = 0.0
    weight_decay_init: WeightDecay = 0.0
    lr_step: Float(gt=0, le=10) = 0.1  # initial outer step sizes of the sign-based updates
    momentum_step: Float(gt=0, le=1) = 0.1
    weight_decay_step: Float(gt=0, le=1) = 3e-4
    step_decay: Float(gt=0, lt=1) = 0.5  # a step is multiplied by this when its hypergradient flips sign
    converged_fraction: Float(ge=0, lt=1) = 0.05  # stop when every step < this fraction of its hyperparameter
    grad_clamp: Float(gt=0, le=1e6) | None = 3.0
    hz_clamp: Float(gt=0, le=1e6) | None = 1.0


class FDSRecipe(RecipeBase):
    method: Literal["fds"] = "fds"
    data: Data = Data()
    model: Model = Model()
    hyper: Hyper = Hyper()
    inner_epochs: Count = 10  # horizon of every inner loop (and of the retraining)
    outer_steps: Count = 10  # at most; stops earlier when the steps have converged
    dtype: Literal["float32", "float64"] = "float32"

    @field_validator("speed")
    @classmethod
    def _exact(cls, speed):
        from toolbox.speed import refuse_inexact

        return refuse_inexact(speed, EXACT)
