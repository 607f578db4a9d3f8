"""One iteration of DM (distribution matching): a fresh frozen random network; per class, the mean
embedding of augmented real images should equal that of the synthetic images (one transformation
per class, shared by both). No network training and no second-order gradients.

The run's speed settings reach the embeddings as precision only: the forward passes run under
autocast (first-order, so bf16 needs nothing more and fp16 scales the loss for the image step),
while the class means and their distance are taken in fp32, where the differences of nearly equal
means keep their digits. The network is built fresh every iteration and not compiled; channels_last
is left off here (unmeasured on a GPU for this small per-iteration network)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from toolbox.speed import Resolved, as_written

from . import augment
from .dc import fresh_network


@dataclass
class Embedder:
    build: object
    train_x: torch.Tensor
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


def dm_step(syn: torch.Tensor, opt_img, m: Embedder) -> float:
    num_classes, ipc = syn.shape[:2]
    net = fresh_network(m.build, m.gen_net).to(syn.device)
    net.train()  # as the reference; instance norm behaves the same in both modes
    for p in net.parameters():
        p.requires_grad_(False)
    idx, mask = m.classes.sample(m.batch_real, m.gen_sample)
    real_x, syn_x = m.train_x[idx], syn
    if m.families is not None:
        draws = augment.draw(num_classes, m.families, syn.shape[-1], m.gen_augment)
        real_x = augment.apply(real_x.flatten(0, 1), draws.repeat(idx.shape[1]), m.families).view_as(real_x)
        syn_x = augment.apply(syn.flatten(0, 1), draws.repeat(ipc), m.families).view_as(syn)
    with m.speed.autocast():
        with torch.no_grad():
            emb_real = net.embed(real_x.flatten(0, 1)).float().view(num_classes, idx.shape[1], -1)
        emb_syn = net.embed(syn_x.flatten(0, 1)).float()
    w = mask.to(emb_real.dtype)[..., None]
    mean_real = (emb_real * w).sum(1) / w.sum(1)
    mean_syn = emb_syn.view(num_classes, ipc, -1).mean(1)
    loss = ((mean_real - mean_syn) ** 2).sum()
    opt_img.zero_grad(set_to_none=True)
    m.scaler.scale(loss).backward(inputs=[syn])
    m.scaler.step(opt_img)
    m.scaler.update()
    return float(loss.detach()) / num_classes
