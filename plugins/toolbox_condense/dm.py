"""One iteration of DM (distribution matching): a fresh frozen random network; per class, the mean
embedding of augmented real images should equal that of the synthetic images (one transformation
per class, shared by both). No network training and no second-order gradients.

The run's speed settings reach the embeddings as precision only: the forward passes run under
autocast (first-order, so bf16 needs nothing more and fp16 scales the loss for the image step),
while the class means and their distance are taken in fp32, where the differences of nearly equal
means keep their digits. The network is built fresh every iteration and not compiled; channels_last
is left off here (unmeasured on a GPU for this small per-iteration network).

On several ranks each embeds only its classes (``Embedder.owned``), as DC does (see dc.py): all
classes' real batches and augmentations are still drawn, the images' gradient is summed over the
ranks and every rank takes the same step. A class's term depends on its own images only as long as
the network normalises each image on its own (instance norm, the default); a batch-norm network in
training mode mixes the classes' statistics, so it is refused on several ranks (condensation.check_ranks)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from toolbox import distributed
from toolbox.speed import Resolved, as_written

from . import augment
from .dc import fresh_network


@dataclass
class Embedder:
    build: object
    train_x: torch.Tensor  # normalised real images on the device (or sampling.StreamedRows)
    classes: object
    batch_real: int
    families: tuple | None
    gen_net: torch.Generator
    gen_sample: torch.Generator
    gen_augment: torch.Generator
    # the run's resolved speed settings (autocast only, see the module docstring), and the loss scaler
    # they call for (fp16; a no-op otherwise), checkpointed by the run
    speed: Resolved = field(default_factory=as_written)
    scaler: torch.amp.GradScaler = field(default_factory=lambda: as_written().grad_scaler())
    # the classes this rank embeds (distributed.share); all of them in one process
    owned: slice = field(default_factory=lambda: slice(None))


def dm_step(syn: torch.Tensor, opt_img, m: Embedder) -> float:
    num_classes, ipc = syn.shape[:2]
    net = fresh_network(m.build, m.gen_net).to(syn.device)
    net.train()  # as the reference; instance norm behaves the same in both modes
    for p in net.parameters():
        p.requires_grad_(False)
    idx, mask = m.classes.sample(m.batch_real, m.gen_sample)
    mine = slice(*m.owned.indices(num_classes)[:2])
    draws = augment.draw(num_classes, m.families, syn.shape[-1], m.gen_augment) if m.families is not None else None
    idx, mask = idx[mine], mask[mine]
    real_x, syn_x = m.train_x[idx], syn[mine]
    n = syn_x.shape[0]
    if draws is not None:
        own = draws.select(mine)
        real_x = augment.apply(real_x.flatten(0, 1), own.repeat(idx.shape[1]), m.families).view_as(real_x)
        syn_x = augment.apply(syn_x.flatten(0, 1), own.repeat(ipc), m.families).view_as(syn_x)
    with m.speed.autocast():
        with torch.no_grad():
            emb_real = net.embed(real_x.flatten(0, 1)).float().view(n, idx.shape[1], -1)
        emb_syn = net.embed(syn_x.flatten(0, 1)).float()
    w = mask.to(emb_real.dtype)[..., None]
    mean_real = (emb_real * w).sum(1) / w.sum(1)
    mean_syn = emb_syn.view(n, ipc, -1).mean(1)
    loss = ((mean_real - mean_syn) ** 2).sum()
    opt_img.zero_grad(set_to_none=True)
    m.scaler.scale(loss).backward(inputs=[syn])
    distributed.all_sum(syn.grad)  # before the scaler looks for infinities: every rank decides alike
    m.scaler.step(opt_img)
    m.scaler.update()
    # in float64, the sum over ranks of their classes' parts (one process: the float32 loss as it was)
    return float(distributed.all_sum(loss.detach().double())) / num_classes
