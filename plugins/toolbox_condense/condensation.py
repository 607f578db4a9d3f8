"""A condensation run: set up data and synthetic images, iterate DC/DSA/DM with checkpoints and
logging, evaluate with the recipe's protocol, save the condensed set, its image grid and its card.

The recipe's ``speed`` section is resolved once for the device and recorded in run.json. It applies
to the evaluator's training (autocast, channels_last and compile on its one-model-at-a-time path, a
gradient scaler for fp16) and to DM's embeddings (autocast, see dm.py). DC/DSA gradient matching
stays in fp32 whatever the section says: it differentiates through the network's gradients, whose
per-channel distances half precision would round (bf16 keeps 8 bits of mantissa) and whose second
derivatives a loss scaler does not cover for fp16.

On several ranks (torchrun, ``--nproc``) the classes are split between them: each rank matches its
own classes' images and the ranks sum the images' gradient (dc.py), so every rank holds the whole
set, and the set, the momentum and the checkpoints are what one process makes (to rounding where a
batched kernel sees fewer classes). The evaluator splits its models between the ranks
(evaluator.py). Rank 0 alone writes the set, its images and its card.

A training split over the memory budget (toolbox.data, streamed from disk) is never loaded whole: the
real images are a sampling.StreamedRows, which decodes the rows each sampled per-class batch indexes
(the initial images for init=real, then every iteration's batches), with the values and hence the set
that the in-memory tensor gives. run.json's ``real_images`` records which, and how many rows a
streamed run decoded.
"""

from __future__ import annotations

import functools

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from toolbox import distributed
from toolbox.errors import UsageError
from toolbox.models import build_for
from toolbox.speed import resolve

from . import augment
from .card import write_card
from .dc import LOOPS, Matcher, classes_batched, fresh_network, match_step
from .dm import Embedder, dm_step
from .evaluator import Protocol, evaluate_set
from .sampling import ClassIndex, StreamedRows

PAPERS = {"dc": "Zhao, Mopuri & Bilen, ICLR 2021 (arXiv:2006.05929)",
          "dsa": "Zhao & Bilen, ICML 2021 (arXiv:2102.08259)",
          "dm": "Zhao & Bilen, WACV 2023 (arXiv:2110.04181)"}


def loops_for(recipe) -> tuple[int, int]:
    """(outer_loop, inner_loop) of DC/DSA; ipc outside the reference's table needs both set."""
    if recipe.outer_loop is not None and recipe.inner_loop is not None:
        return recipe.outer_loop, recipe.inner_loop
    if recipe.ipc not in LOOPS:
        raise UsageError(f"{recipe.method} has loop settings for ipc {', '.join(map(str, LOOPS))} only (got ipc "
                         f"{recipe.ipc}); pick one of those or set both -o outer_loop=N -o inner_loop=M")
    return LOOPS[recipe.ipc]


def check_ipc(recipe, data) -> None:
    smallest = int(torch.bincount(data.train_y, minlength=data.num_classes).min())
    if recipe.ipc < 1 or recipe.ipc > smallest:
        raise UsageError(f"ipc must be between 1 and {smallest} (the smallest class of {data.name}), got {recipe.ipc}")
    if recipe.method in ("dc", "dsa"):
        loops_for(recipe)


def strategy_for(value: str, dataset: str) -> str:
    return augment.default_strategy(dataset) if value == "auto" else value


def protocol_for(recipe, dataset: str) -> Protocol:
    e = recipe.eval
    return Protocol(models=e.models, epochs=e.epochs, lr=e.lr, momentum=e.momentum, weight_decay=e.weight_decay,
                    batch_size=e.batch_size, augment=strategy_for(e.augment, dataset), arch=e.arch, stacked=e.stacked)


def _init_images(recipe, data, train_x, classes, generator):
    c, h, w = data.shape
    if recipe.init == "real":
        idx, _ = classes.sample(recipe.ipc, generator)
        return train_x[idx].clone()
    noise = torch.randn(data.num_classes, recipe.ipc, c, h, w, generator=generator, device=generator.device)
    return noise.to(train_x.device)


def check_ranks(recipe, data, build) -> slice:
    """This rank's classes; one line when the ranks cannot split the classes as one process would match them."""
    world = distributed.world()
    if world > data.num_classes:
        raise UsageError(f"{world} ranks but {data.name} has {data.num_classes} classes, and condensation splits "
                         f"the classes between the ranks; start at most {data.num_classes} (--nproc {data.num_classes})")
    if world > 1 and recipe.method == "dm":
        # a throwaway network from its own seed: the run's generators and the global RNG are untouched
        net = fresh_network(build, torch.Generator().manual_seed(0))
        if any(isinstance(m, _BatchNorm) for m in net.modules()):
            raise UsageError(f"DM on several ranks needs a network that normalises each image on its own, but "
                             f"{recipe.model.arch} has batch norm (its statistics mix the classes the ranks split); "
                             "use instance norm (the default convnet) or run on one process")
    return distributed.share(data.num_classes)


def run_condense(recipe, run) -> dict:
    from toolbox.data import load

    try:
        data = load(recipe.data.dataset)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    check_ipc(recipe, data)
    device = run.device
    speed = resolve(recipe.speed, device)
    run.record(speed=speed.record())
    num_classes = data.num_classes
    build = functools.partial(build_for, recipe.model.arch, data.spec)
    owned = check_ranks(recipe, data, build)

    strategy = strategy_for(recipe.augment.strategy, data.name)
    families = augment.parse_strategy(strategy) if recipe.method in ("dsa", "dm") and strategy != "none" else None
    # a split over the memory budget stays on disk: each sampled real batch is decoded through the
    # class index (sampling.StreamedRows); otherwise the whole normalised split on the device, as always
    train_x = StreamedRows(data.train_stream, device) if data.streamed else data.normalize(data.train_x).to(device)
    run.record(real_images={"loading": "streamed" if data.streamed else "memory"})
    classes = ClassIndex(data.train_y.to(device), num_classes)
    # sampling and augmentation draw on the device (on the CPU: the CPU streams, unchanged), so nothing
    # is copied to a GPU per step; the network seeds and the initial images stay on the CPU (read once)
    gens = {name: run.generator(name) for name in ("init", "net", "eval")}
    gens.update({name: run.generator(name, device if device.type == "cuda" else None) for name in ("sample", "augment")})

    syn = _init_images(recipe, data, train_x, classes, gens["init"]).requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=recipe.lr_img, momentum=recipe.momentum_img)
    scaler = speed.grad_scaler() if recipe.method == "dm" else None  # DC/DSA match in fp32 (see the docstring)
    kept = {"scaler": scaler} if scaler is not None and scaler.is_enabled() else {}
    start = 0
    saved = run.load_checkpoint()
    if saved is not None:
        start = run.restore(saved, images=syn, optimizer=opt, **kept)

    if recipe.method == "dm":
        state = Embedder(build, train_x, classes, recipe.data.batch_real, families,
                         gens["net"], gens["sample"], gens["augment"], speed, scaler, owned)
        step = dm_step
    else:
        outer, inner = loops_for(recipe)
        batched = classes_batched(recipe.class_batching, device)
        state = Matcher(build, train_x, classes, recipe.data.batch_real, outer, inner, recipe.lr_net,
                        recipe.batch_train, recipe.distance, families, batched,
                        gens["net"], gens["sample"], gens["augment"], owned)
        step = match_step

    protocol = protocol_for(recipe, data.name)
    labels = torch.arange(num_classes).repeat_interleave(recipe.ipc)
    every = recipe.checkpoint_every or max(1, recipe.iterations // 10)
    with run.progress(recipe.iterations, f"{recipe.method} {data.name} ipc {recipe.ipc}", start=start) as bar:
        for it in range(start, recipe.iterations):
            loss = step(syn, opt, state)
            run.check_finite(loss, it + 1)
            if (it + 1) % recipe.log_every == 0 or it + 1 == recipe.iterations:
                run.log(it + 1, loss=loss)
            if recipe.eval.every and (it + 1) % recipe.eval.every == 0 and it + 1 < recipe.iterations:
                quick = evaluate_set(syn.detach().flatten(0, 1), labels, data, protocol, recipe.seed, device, speed=speed)
                run.log(it + 1, accuracy=quick["accuracy"], accuracy_std=quick["accuracy_std"])
            bar.update(1, loss=loss)
            if (it + 1) % every == 0 and it + 1 < recipe.iterations:
                run.save_checkpoint({"images": syn.detach(), "optimizer": opt.state_dict(),
                                     **{k: v.state_dict() for k, v in kept.items()}}, it + 1)

    if data.streamed:  # how many real images the sampled batches decoded (this process, this session)
        run.record(real_images={"loading": "streamed", "decoded_rows": train_x.decoded, "split_rows": len(train_x)})
    images = syn.detach().flatten(0, 1).cpu()
    result = evaluate_set(images, labels, data, protocol, recipe.seed, device, speed=speed)
    metrics = {"accuracy": result["accuracy"], "accuracy_std": result["accuracy_std"], "loss": loss if recipe.iterations > start else None}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    run.log(recipe.iterations, **metrics)
    # the section as asked, so that `toolbox evaluate` resolves it for its own device (run.json has what ran)
    described = {**protocol.describe(), "seed": recipe.seed, "note": recipe.eval.note, "speed": recipe.speed.model_dump()}
    extra = {"protocol": described, "accuracies": result["accuracies"], "eval_seeds": result["seeds"],
             "seeds": {"recipe": recipe.seed, "generators": ["init", "net", "sample", "augment"]},
             "condense": {"iterations": recipe.iterations, "init": recipe.init, "lr_img": recipe.lr_img,
                          "augment": strategy if families is not None else "none", "arch": recipe.model.arch},
             "paper": PAPERS[recipe.method],
             "expect": recipe.expect.model_dump() if recipe.expect else None}
    from toolbox.artifacts import save_synthetic

    if not run.main:
        return metrics
    save_synthetic(run.dir, images, labels, dataset=data.spec, method=recipe.method, ipc=recipe.ipc,
                   extra=extra, metrics=metrics)
    # each tile named by its class where the figure stays legible; past that, one class per row
    named = len(images) <= 200
    run.save_images("synthetic", images, mean=data.mean, std=data.std, nrow=recipe.ipc if recipe.ipc > 1 else num_classes,
                    labels=[data.spec.class_name(int(c)) for c in labels.tolist()] if named else None,
                    title=f"{recipe.method.upper()} condensed {data.name}: {recipe.ipc} image(s) per class"
                          + ("" if named or recipe.ipc == 1 else ", one class per row"))
    write_card(run.dir, method=recipe.method, dataset=data.name, ipc=recipe.ipc, paper=PAPERS[recipe.method],
               metrics=metrics, protocol=described, expect=extra["expect"])
    return metrics
