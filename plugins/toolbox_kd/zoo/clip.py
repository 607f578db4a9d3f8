"""The student's gradient as Lee & Song's optimiser combines it for MHGD (2019, "Graph-based Knowledge
Distillation by Multi-head Attention Network") and IEP (2021, "Interpretable Embedding Procedure
Knowledge Transfer ..."): sseung0703/KD_methods_with_TF op_util.py, ``Optimizer_w_MHGD`` (lines 168-214)
and ``sigmoid`` (216-220), with train_w_distill.py's epoch counter (line 64). IEPKT's train_w_distill.py
calls an ``Optimizer_w_IEP(class_loss, LR, weight_decay, epoch, init_epoch, global_step)`` from an
op_util.py that is not published; it takes MHGD's epoch and init_epoch (the warm-up's inputs) and is
taken to combine as MHGD's does.

Per student variable the reference takes three gradients: of the cross-entropy (gc), of the weight
decay (gw) and of the distillation term (gd), and applies

    gw + gc + clip_by_norm(gd, ||gc|| * sigmoid(epoch - init_epoch))

so the term can never pull a variable harder than the task does, and only half as hard in the first
epoch of distillation (sigmoid(0) = 0.5, then 0.73, 0.88, ...). Where gd is None (variables after the
last distilled feature: the classifier) it applies gw + gc; where both are None, nothing (not even gw).

Here gw is the optimiser's weight decay (SGD's ``weight_decay`` adds wd * p, the gradient of the
reference's l2_regularizer(wd) = wd * sum(p^2) / 2), so the gradient set here is gc + clip(gd). Choices
where the reference has nothing to follow:
- a student variable the term reaches but the task does not (gc None, gd not): the reference fails to
  build its graph there (tf.square(None)); here gc counts as zero, so the term's gradient is clipped to
  zero: the variable gets a zero gradient (the optimiser's weight decay and momentum still apply).
- the distiller's own trainable parameters (the width adapters of MHGD and IEP, which the reference,
  distilling equal widths, does not have; its attention networks are outside the student's optimiser
  and frozen after their stage, as ours are): the task does not reach them, so clipping would freeze
  them at their initialisation; they take the term's gradient unclipped, as on the plain path.
- clip_by_norm's 0 / 0 (a zero term gradient clipped to a zero norm) is NaN in TensorFlow; here zero.
- the warm-up is computed in double precision; the reference's float32 rounds its 1 - 1e-8 threshold
  to 1 and its sigmoid to 1 from x = 17 on: the factors differ by less than 1e-7.
"""

from __future__ import annotations

import math

import torch


def warmup(epochs_distilled: int) -> float:
    """op_util.sigmoid(epoch - init_epoch, 0): 1 / (1 + exp(-x)), taken as 1 once above 1 - 1e-8.
    ``epochs_distilled``: whole epochs of distillation done (train_w_distill.py's floor_div counter, less
    the init epochs, which its global step also counts)."""
    s = 1 / (1 + math.exp(-epochs_distilled))
    return 1.0 if s > 1 - 1e-8 else s


def clip_by_norm(t, clip_norm):
    """tf.clip_by_norm: t * c / max(||t||, c), with 0 / 0 (t zero and c zero) taken as zero."""
    denominator = torch.maximum(t.pow(2).sum().sqrt(), clip_norm)
    return t * clip_norm / torch.where(denominator > 0, denominator, torch.ones_like(denominator))


def set_gradients(main, term, student_params, own_params, factor: float) -> None:
    """Set ``.grad`` of the student's parameters to gc + clip(gd, ||gc|| * factor) and of the distiller's
    own to gd, where gc is the gradient of ``main`` (the task's loss) and gd of ``term`` (the weighted
    distillation term, None where the distiller adds nothing). A parameter neither reaches keeps no
    gradient, so the optimiser leaves it alone."""
    params = list(student_params) + list(own_params)
    g_main = torch.autograd.grad(main, student_params, retain_graph=term is not None, allow_unused=True)
    g_term = (torch.autograd.grad(term, params, allow_unused=True) if term is not None
              else [None] * len(params))
    for p, gc, gd in zip(student_params, g_main, g_term):
        if gd is None:
            p.grad = gc
            continue
        gc = torch.zeros_like(p) if gc is None else gc
        p.grad = gc + clip_by_norm(gd, gc.pow(2).sum().sqrt() * factor)
    for p, gd in zip(own_params, g_term[len(student_params):]):
        p.grad = gd
