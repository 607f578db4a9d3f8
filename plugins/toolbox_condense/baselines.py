"""Coreset baselines of the papers, selected from the real training set: random, herding and
k-center (ipc images per class), and the whole training set.

- random: ipc images per class drawn uniformly without replacement (the evaluation's generator,
  seeded alike on every rank, so every rank draws the same images).
- herding: per class, the t-th pick is the remaining image whose feature brings the mean of the t
  picked features closest to the class mean (nearest remaining feature to t * mean - sum of the
  picks; no image twice). The first pick is the image nearest the class mean.
- kcenter: per class, greedy k-center: the first centre is the image nearest the class mean, then
  each pick is the image farthest from its nearest chosen centre. At ipc 1 it therefore picks
  herding's image and reports the same accuracy; that is the DC authors' rule, not a shortcut.
- whole: the full training set.

On a training split streamed from disk (over the memory budget, toolbox.data) only random runs: it
decodes just the images it draws. Herding and k-center need features of every training image and
whole needs every image, so they refuse in one line that names the baseline and the fix.

Both greedy rules are the pseudocode the DC authors gave for their baselines
(VICO-UoE/DatasetCondensation issues #15 and #21; the repository ships no coreset code). Sener &
Savarese's k-center greedy starts from an already labelled pool instead, and libraries without one
start from a random image (e.g. DeepCore): not what the DC tables measured.

Distances are Euclidean on features: ``embed()`` (the flattened last conv block, the classifier's
input) of one network of the evaluation architecture trained on the whole training set
(FEATURE_EPOCHS epochs with the evaluation optimiser, no augmentation). The authors' pseudocode
leaves the feature extractor open; this one is our choice.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from toolbox import distributed
from toolbox.seeding import init_with_seed

from .evaluator import Protocol, model_seed, train_models
from .sampling import ClassIndex

NAMES = ("random", "herding", "kcenter", "whole")
FEATURE_EPOCHS = 30


def feature_network(build, train_x, train_y, protocol: Protocol, seed: int, device):
    quick = replace(protocol, epochs=FEATURE_EPOCHS, augment="none", models=1)
    s = model_seed(seed, 10_000)
    _, params = train_models(build, train_x, train_y, quick, [s], device)
    net = init_with_seed(build, s).to(device)
    net.load_state_dict({k: v[0].detach() for k, v in params.items()}, strict=False)
    return net.eval()


def herding(features: torch.Tensor, k: int) -> list[int]:
    """Greedy choice whose running mean stays closest to the class mean (Welling 2009; the DC authors'
    rule): pick t minimises |mean - (sum of picks + x) / t|, over images not picked yet."""
    mu = features.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(mu)
    available = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
    for t in range(1, k + 1):
        dist = ((mu - (total + features) / t) ** 2).sum(1).masked_fill(~available, float("inf"))
        i = int(dist.argmin())
        chosen.append(i)
        total += features[i]
        available[i] = False
    return chosen


def kcenter(features: torch.Tensor, k: int) -> list[int]:
    """Greedy k-center as the DC authors run it: start at the sample nearest the class mean, then take
    the sample farthest from its nearest chosen centre."""
    first = int(((features - features.mean(0)) ** 2).sum(1).argmin())
    chosen = [first]
    nearest = ((features - features[first]) ** 2).sum(1)
    nearest[first] = -1.0  # a chosen centre is never chosen again, even among duplicates
    for _ in range(k - 1):
        i = int(nearest.argmax())
        chosen.append(i)
        nearest = torch.minimum(nearest, ((features - features[i]) ** 2).sum(1))
        nearest[i] = -1.0
    return chosen


def select(name: str, data, ipc: int, protocol: Protocol, seed: int, device, build, generator) -> tuple:
    """-> (images, labels) of baseline ``name``: normalised, on the CPU."""
    if data.streamed:
        return _select_streamed(name, data, ipc, generator)
    train_x, train_y = data.normalize(data.train_x), data.train_y
    if name == "whole":
        return train_x, train_y
    if name == "random":
        idx, _ = ClassIndex(train_y, data.num_classes).sample(ipc, generator)
        idx = idx.flatten()
        return train_x[idx], train_y[idx]
    def greedy() -> list[int]:
        net = feature_network(build, train_x, train_y, protocol, seed, device)
        with torch.no_grad():
            feats = torch.cat([net.embed(train_x[i:i + 1000].to(device)) for i in range(0, len(train_x), 1000)]).cpu()
        pick = herding if name == "herding" else kcenter
        chosen = []
        for c in range(data.num_classes):
            members = (train_y == c).nonzero().squeeze(1)
            chosen += [int(members[i]) for i in pick(feats[members], ipc)]
        return chosen

    # on several ranks rank 0 picks and the others take its picks: every rank then evaluates the same
    # images, whatever a GPU's nondeterminism would have made of the feature network elsewhere
    idx = torch.tensor(distributed.from_main(greedy))
    return train_x[idx], train_y[idx]


def _select_streamed(name: str, data, ipc: int, generator) -> tuple:
    """A training split over the memory budget (decoded from disk per item): random decodes only the rows
    it draws (the same rows and values as in memory); herding and k-center rank features of every
    training image, and whole is every image, so those refuse in one line."""
    if name == "random":
        idx, _ = ClassIndex(data.train_y, data.num_classes).sample(ipc, generator)
        idx = idx.flatten()
        return data.train_stream.tensor_at(idx.tolist()), data.train_y[idx]
    why = "the whole training set" if name == "whole" else "features of every training image"
    data.require_in_memory(f"the {name} baseline ({why}; random streams)")
    raise AssertionError("require_in_memory returns only for a split in memory")
