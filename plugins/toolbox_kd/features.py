"""Intermediate outputs of any model, taken with forward hooks, so attention transfer needs no
rewritten forward pass: name the module paths (the WRN groups by default)."""

from __future__ import annotations

import torch

from toolbox.errors import UsageError


def default_layers(model, arch: str, role: str) -> list[str]:
    layers = list(getattr(model, "feature_layers", ()) or ())
    if not layers:
        raise UsageError(f"{role} architecture '{arch}' has no default attention layers; name module paths with "
                         f"-o loss.{role}_layers='[a, b.c]' (valid: {_some_modules(model)})")
    return layers


def _some_modules(model, limit: int = 12) -> str:
    names = [n for n, _ in model.named_modules() if n and n.count(".") <= 1]
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


class FeatureTap:
    """Records the outputs of ``layers`` (in that order) on every forward pass of ``model``."""

    def __init__(self, model, layers: list[str], arch: str, role: str):
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            raise UsageError(f"{role} '{arch}' has no module '{missing[0]}' for attention transfer; "
                             f"valid module paths include: {_some_modules(model)}")
        self.layers = list(layers)
        self.outputs: list[torch.Tensor] = []
        self._handles = [modules[name].register_forward_hook(self._keep) for name in layers]

    def _keep(self, module, inputs, output):
        self.outputs.append(output)

    def __call__(self, model, x):
        """(logits, [features]) of one forward pass."""
        self.outputs = []
        logits = model(x)
        feats, self.outputs = self.outputs, []
        return logits, feats


def check_attention_pairs(student_tap, teacher_tap, student, teacher, input_shape, device) -> None:
    """One forward pass on zeros: the matched maps must pair up and agree in spatial size."""
    if len(student_tap.layers) != len(teacher_tap.layers):
        raise UsageError(f"attention transfer pairs layers one to one: student has {len(student_tap.layers)} "
                         f"({', '.join(student_tap.layers)}), teacher {len(teacher_tap.layers)} ({', '.join(teacher_tap.layers)})")
    x = torch.zeros(2, *input_shape, device=device)
    was = student.training
    student.eval()
    with torch.no_grad():
        _, s_feats = student_tap(student, x)
        _, t_feats = teacher_tap(teacher, x)
    student.train(was)
    for s_name, t_name, s, t in zip(student_tap.layers, teacher_tap.layers, s_feats, t_feats):
        if s.dim() != 4 or t.dim() != 4 or s.shape[-2:] != t.shape[-2:]:
            raise UsageError(f"attention maps differ in size: student '{s_name}' gives {tuple(s.shape[2:])}, teacher "
                             f"'{t_name}' {tuple(t.shape[2:])}; match layers with the same resolution")
