"""Core's datasets: names, shapes, class counts and normalisation statistics.

Imported while plugins load, so nothing here imports torch or numpy: the readers are named as
"module:function" strings and imported on first load.
"""

from __future__ import annotations

from functools import partial

from ..registry import DatasetSpec
from . import download

READERS = "toolbox.data.readers"

# Per-channel mean/std of the training images in [0, 1]. Digits': computed on the fixed train split
# (tests recompute them). The others are the values the papers' code uses (CIFAR-10's std is the
# widely copied (0.2023, 0.1994, 0.2010) of the ZSKT code, kept for comparability).
_STATS = {
    "digits": ((0.3049,), (0.3758,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2861,), (0.3530,)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    # the SPT/LSA reference code's values (utils/dataloader.py, T-IMNET)
    "tiny-imagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
}


# class names by label, as the datasets' own documentation lists them (CIFAR-100: its fine labels)
DIGITS = tuple(str(d) for d in range(10))
_CLASSES = {
    "digits": DIGITS, "mnist": DIGITS, "svhn": DIGITS,
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "cifar100": tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
        butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile
        cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
        leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter
        palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket
        rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper
        table tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf
        woman worm""".split()),
}


def _on_disk(name: str, num_classes: int, shape: tuple[int, int, int], summary: str) -> DatasetSpec:
    mean, std = _STATS[name]
    return DatasetSpec(
        name=name, num_classes=num_classes, shape=shape, mean=mean, std=std, classes=_CLASSES.get(name, ()),
        load=f"{READERS}:load_{name.replace('-', '_')}", summary=summary, folder=name,
        files=download.file_names(name),
        is_present=partial(download.present, name), location=partial(download.location, name),
    )


def datasets() -> list[DatasetSpec]:
    mean, std = _STATS["digits"]
    return [
        DatasetSpec(
            name="digits", num_classes=10, shape=(1, 8, 8), mean=mean, std=std, load=f"{READERS}:load_digits",
            classes=_CLASSES["digits"],
            summary="scikit-learn's 8x8 digits (embedded): 1352 train / 445 test, fixed stratified split",
        ),
        _on_disk("mnist", 10, (1, 28, 28), "MNIST handwritten digits, 60k train / 10k test (IDX files)"),
        _on_disk("fashion-mnist", 10, (1, 28, 28), "Fashion-MNIST clothing, 60k train / 10k test (IDX files)"),
        _on_disk("svhn", 10, (3, 32, 32), "SVHN house numbers, 73,257 train / 26,032 test (.mat files)"),
        _on_disk("cifar10", 10, (3, 32, 32), "CIFAR-10, 50k train / 10k test (binary version)"),
        _on_disk("cifar100", 100, (3, 32, 32), "CIFAR-100 fine labels, 50k train / 10k test (binary version)"),
        # class k = the k-th wnid in sorted order (ImageFolder's), as the SPT/LSA code reads it
        _on_disk("tiny-imagenet", 200, (3, 64, 64), "Tiny-ImageNet (CS231n), 200 classes of 64x64, 100k train / "
                 "10k val (the test split: the published test images have no labels)"),
    ]
