"""Distillation losses shared by methods (KD, ZSKT): the exact reductions the papers' code uses."""

from __future__ import annotations

import torch.nn.functional as F


def kl_mean(student_logits, teacher_logits, temperature: float = 1.0):
    """KL(teacher || student) with reduction='mean' (divides by batch * classes), as the ZSKT and
    few-shot KD reference code do; multiply by 2*alpha*T^2 outside for the KD form."""
    # reduction="sum" / numel is reduction="mean" without torch's warning that "mean" is not batchmean
    kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                  F.softmax(teacher_logits / temperature, dim=1), reduction="sum")
    return kl / student_logits.numel()


def attention_map(features):
    """Zagoruyko & Komodakis: mean over channels of x^2, flattened, L2-normalised per sample."""
    return F.normalize(features.pow(2).mean(1).flatten(1), dim=1)


def attention_loss(student_features, teacher_features):
    """mean((a_s - a_t)^2) over batch and positions (not a norm, not a sum)."""
    if student_features.shape[-2:] != teacher_features.shape[-2:]:
        raise ValueError(f"attention maps differ in size: student {tuple(student_features.shape[-2:])} vs "
                         f"teacher {tuple(teacher_features.shape[-2:])}")
    return (attention_map(student_features) - attention_map(teacher_features)).pow(2).mean()


def kd_loss(student_logits, teacher_logits, labels, alpha: float, temperature: float):
    """Hinton KD in the reference's form: (1-a) CE + 2 a T^2 KL_mean(T)."""
    ce = F.cross_entropy(student_logits, labels)
    return (1 - alpha) * ce + 2 * alpha * temperature**2 * kl_mean(student_logits, teacher_logits, temperature)


__all__ = ["kl_mean", "attention_map", "attention_loss", "kd_loss"]
