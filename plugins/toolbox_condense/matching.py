"""Per-class gradient matching: sum over classes c of D(grad CE(net(real_c), c), grad CE(net(syn_c), c)).

Two ways to compute it, same maths: ``vmap`` computes every class's gradients in one batched call
(torch.func); ``loop`` goes class by class and back-propagates each class's term into the synthetic
images at once, so only one class's graph is alive (the memory-light mode). On a CPU the loop is
the faster of the two (the per-class batches fit in cache, the batched one does not); on a GPU the
batched call avoids thousands of small kernel launches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from toolbox.gradmatch import match_distance


def _masked_ce(model, params, buffers, x, y, weight):
    logits = functional_call(model, (params, buffers), (x,))
    return (F.cross_entropy(logits, y, reduction="none") * weight).sum() / weight.sum()


def class_gradients(model, x, y, weight, create_graph: bool = False) -> list[torch.Tensor]:
    """Gradients of each class's mean cross-entropy, batched over classes: x [C, n, ...], y and
    weight [C, n] (weight 0 marks padding) -> one [C, *param.shape] tensor per parameter."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    grads = vmap(grad(_masked_ce, argnums=1), in_dims=(None, None, None, 0, 0, 0))(model, params, buffers, x, y, weight)
    out = [grads[k] for k in params]
    return out if create_graph else [g.detach() for g in out]


def match_loss_vmap(model, real_x, real_y, real_w, syn_x, syn_y, kind: str = "ours") -> torch.Tensor:
    g_real = class_gradients(model, real_x, real_y, real_w)
    g_syn = class_gradients(model, syn_x, syn_y, torch.ones_like(syn_y, dtype=syn_x.dtype), create_graph=True)
    per_class = vmap(lambda r, s: match_distance(r, s, kind))(g_real, g_syn)
    return per_class.sum()


def class_match_loss(model, real_x, real_y, syn_x, syn_y, kind: str = "ours") -> torch.Tensor:
    """One class's term, with the reference's autograd calls (the loop form; graph kept on the
    synthetic side only)."""
    params = list(model.parameters())
    g_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(model(real_x), real_y), params)]
    g_syn = torch.autograd.grad(F.cross_entropy(model(syn_x), syn_y), params, create_graph=True)
    return match_distance(g_real, g_syn, kind)
