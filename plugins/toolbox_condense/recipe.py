"""Recipe schema shared by DC, DSA and DM."""

from typing import Literal

from toolbox.recipes import RecipeBase, Section


class Data(Section):
    dataset: str = "digits"
    batch_real: int = 256  # real images per class per matching step


class Model(Section):
    arch: str = "convnet"  # the network matched on (any ConvNet variant)


class Augment(Section):
    # DSA strategy for the Siamese augmentation (dsa, dm); "auto" = the full strategy, without flip
    # on the digit datasets (digits, mnist, svhn); "none" turns it off
    strategy: str = "auto"


class Evaluation(Section):
    """The evaluation protocol (see evaluator.Protocol); every reported number carries it."""

    models: int = 5
    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    batch_size: int = 256
    augment: str = "none"  # "none", "auto" (the DSA strategy of the dataset) or a strategy
    arch: str = "convnet"
    every: int = 0  # also evaluate every N iterations during condensation (0: only at the end)
    note: str = ""  # how this protocol differs from the paper's, stored beside the numbers


class CondenseRecipe(RecipeBase):
    method: Literal["dc", "dsa", "dm"] = "dc"
    data: Data = Data()
    model: Model = Model()
    augment: Augment = Augment()
    eval: Evaluation = Evaluation()
    ipc: int = 1
    iterations: int = 1000
    init: Literal["noise", "real"] = "noise"
    lr_img: float = 0.1
    momentum_img: float = 0.5
    lr_net: float = 0.01  # DC/DSA: the network trained between outer steps
    batch_train: int = 256
    outer_loop: int | None = None  # DC/DSA: None = the reference's table by ipc
    inner_loop: int | None = None
    distance: Literal["ours", "mse", "cos"] = "ours"
    # DC/DSA: "vmap" = all classes' gradients in one batched call; "loop" = class by class, one
    # class's graph in memory at a time (same maths); "auto" = loop on CPU, vmap on GPU
    class_batching: Literal["auto", "vmap", "loop"] = "auto"
    log_every: int = 10
