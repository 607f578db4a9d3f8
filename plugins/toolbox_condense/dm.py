"""One iteration of DM (distribution matching): a fresh frozen random network; per class, the mean
embedding of augmented real images should equal that of the synthetic images (one transformation
per class, shared by both). No network training and no second-order gradients."""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
    with torch.no_grad():
        emb_real = net.embed(real_x.flatten(0, 1)).view(num_classes, idx.shape[1], -1)
        w = mask.to(emb_real.dtype)[..., None]
        mean_real = (emb_real * w).sum(1) / w.sum(1)
    mean_syn = net.embed(syn_x.flatten(0, 1)).view(num_classes, ipc, -1).mean(1)
    loss = ((mean_real - mean_syn) ** 2).sum()
    opt_img.zero_grad(set_to_none=True)
    loss.backward(inputs=[syn])
    opt_img.step()
    return float(loss.detach()) / num_classes
