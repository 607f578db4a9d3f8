"""Deep leakage from gradients: recover a training example from the gradient it produced.

iDLG (Zhao, Mopuri & Bilen 2020) reads the label off the last layer's weight gradient exactly, then
matches gradients over the input only; DLG (Zhu et al. 2019), the baseline, optimises a soft dummy
label as well. Gradient matching uses core's ``match_distance(kind="mse")``, shared with dataset
condensation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from toolbox.gradmatch import match_distance

STOP_LOSS = 1e-6


@dataclass
class VictimGradient:
    grads: list  # one per trainable parameter, in model.parameters() order
    label_weight_index: int | None  # position of the logits layer's weight in grads
    penultimate_min: float | None  # smallest input to the logits layer on this example
    logits_from_layer: bool  # the found linear layer's output is the model's output


def logits_layer(model, num_classes: int) -> nn.Linear | None:
    """The last nn.Linear with one output per class: the layer iDLG reads the label from."""
    found = None
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.out_features == num_classes:
            found = m
    return found


def victim_gradient(model, x, y, num_classes: int) -> VictimGradient:
    """grad_theta CE(model(x), y) for one example (batch size 1), and what the label rule assumes."""
    params = [p for p in model.parameters() if p.requires_grad]
    layer = logits_layer(model, num_classes)
    seen = {}
    handle = layer.register_forward_hook(lambda m, inp, out: seen.update(h=inp[0].detach(), out=out.detach())) \
        if layer is not None else None
    try:
        logits = model(x)
    finally:
        if handle is not None:
            handle.remove()
    grads = [g.detach() for g in torch.autograd.grad(F.cross_entropy(logits, y), params)]
    index = next((i for i, p in enumerate(params) if layer is not None and p is layer.weight), None)
    return VictimGradient(
        grads=grads, label_weight_index=index,
        penultimate_min=seen["h"].min().item() if "h" in seen else None,
        logits_from_layer="out" in seen and torch.equal(seen["out"], logits.detach()),
    )


def extract_label(victim: VictimGradient) -> int:
    """argmin over classes of the row sums of dL/dW_last.

    Row c is (p_c - y_c) h: with non-negative h only the true class has p_c - y_c < 0.
    """
    return int(victim.grads[victim.label_weight_index].sum(dim=1).argmin())


@dataclass
class Reconstruction:
    image: torch.Tensor  # [1, C, H, W], in the model's (normalised) input space
    label: int  # iDLG: the extracted label; DLG: argmax of the optimised soft label
    loss: float  # final gradient distance
    steps: int  # LBFGS steps taken (each up to 20 inner iterations)


def reconstruct(model, victim: VictimGradient, shape, num_classes: int, *, label: int | None, iters: int,
                generator: torch.Generator) -> Reconstruction:
    """Match gradients with LBFGS (lr 1) from x' ~ N(0, 1). ``label`` None: DLG, optimising a soft label too."""
    params = [p for p in model.parameters() if p.requires_grad]
    device = victim.grads[0].device
    dummy = torch.randn((1, *shape), generator=generator).to(device).requires_grad_(True)
    soft = None if label is not None else torch.randn((1, num_classes), generator=generator).to(device).requires_grad_(True)
    target = torch.tensor([label], device=device) if label is not None else None
    opt = torch.optim.LBFGS([dummy] if soft is None else [dummy, soft], lr=1)

    def closure():
        opt.zero_grad()
        # the match differentiates the gradient again: the fused attention kernels (a ViT's
        # scaled_dot_product_attention) have no second derivative, the math one has
        with sdpa_kernel(SDPBackend.MATH):
            logits = model(dummy)
        loss = F.cross_entropy(logits, target) if soft is None else F.cross_entropy(logits, F.softmax(soft, dim=-1))
        dummy_grads = torch.autograd.grad(loss, params, create_graph=True)
        distance = match_distance(victim.grads, dummy_grads, kind="mse")
        distance.backward()
        return distance

    best = dummy.detach().clone()
    loss, steps = math.inf, 0
    while steps < iters:
        steps += 1
        opt.step(closure)
        current = closure().item()
        if not math.isfinite(current):  # LBFGS without line search can diverge: keep the last finite image
            break
        best, loss = dummy.detach().clone(), current
        if current < STOP_LOSS:
            break
    found = label if soft is None else int(soft.detach().argmax())
    return Reconstruction(image=best, label=found, loss=loss, steps=steps)
