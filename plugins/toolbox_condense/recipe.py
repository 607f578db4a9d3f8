"""Recipe schema shared by DC, DSA and DM."""

from typing import Annotated, Literal

from pydantic import AfterValidator

from toolbox.recipes import (
    ArchName,
    BatchSize,
    Count,
    DataSource,
    Float,
    Int,
    Interval,
    LearningRate,
    Momentum,
    RecipeBase,
    Section,
    WeightDecay,
)


def check_strategy(value: str) -> str:
    """"auto", "none" or DSA families joined by "_" (color_crop_...): a typo is an error, not a silent default."""
    if value not in ("auto", "none"):
        from .augment import parse_strategy

        try:
            parse_strategy(value)
        except ValueError as e:
            raise ValueError(f"{e}, or auto or none") from None
    return value


Strategy = Annotated[str, AfterValidator(check_strategy)]


class Data(DataSource):  # dataset (any reference), image_size, channels
    batch_real: BatchSize = 256  # real images per class per matching step


class Model(Section):
    arch: ArchName = "convnet"  # the network matched on (any ConvNet variant)


class Augment(Section):
    # DSA strategy for the Siamese augmentation (dsa, dm); "auto" = the full strategy, without flip
    # on the digit datasets (digits, mnist, svhn); "none" turns it off
    strategy: Strategy = "auto"


class Evaluation(Section):
    """The evaluation protocol (see evaluator.Protocol); every reported number carries it."""

    models: Int(1, 10_000) = 5
    epochs: Count = 300
    lr: LearningRate = 0.01
    momentum: Momentum = 0.9
    weight_decay: WeightDecay = 0.0005
    batch_size: BatchSize = 256
    augment: Strategy = "none"  # "none", "auto" (the DSA strategy of the dataset) or a strategy
    arch: ArchName = "convnet"
    # train the models together in one vmapped call (true) or one after another (false); auto =
    # together where it pays (any GPU; small steps on the CPU). Batch-norm models, and all models
    # under speed.amp bf16/fp16 (autocast does not reach a vmapped call), train one after another.
    # Same models either way (same draws; float rounding aside)
    stacked: bool | Literal["auto"] = "auto"
    every: Interval = 0  # also evaluate every N iterations during condensation (0: only at the end)
    note: str = ""  # how this protocol differs from the paper's, stored beside the numbers


class CondenseRecipe(RecipeBase):
    method: Literal["dc", "dsa", "dm"] = "dc"
    data: Data = Data()
    model: Model = Model()
    augment: Augment = Augment()
    eval: Evaluation = Evaluation()
    ipc: Int(1, 100_000) = 1
    iterations: Count = 1000
    init: Literal["noise", "real"] = "noise"
    lr_img: Float(gt=0, le=1e6) = 0.1  # DM's papers use 1 to 100 on unnormalised pixels
    momentum_img: Momentum = 0.5
    lr_net: LearningRate = 0.01  # DC/DSA: the network trained between outer steps
    batch_train: BatchSize = 256
    outer_loop: Int(1, 100_000) | None = None  # DC/DSA: None = the reference's table by ipc
    inner_loop: Int(0, 100_000) | None = None
    distance: Literal["ours", "mse", "cos"] = "ours"
    # DC/DSA: "vmap" = all classes' gradients in one batched call; "loop" = class by class, one
    # class's graph in memory at a time (same maths); "auto" = loop on CPU, vmap on GPU
    class_batching: Literal["auto", "vmap", "loop"] = "auto"
    log_every: Count = 10
