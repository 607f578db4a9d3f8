"""Intermediate outputs of any model, taken with forward hooks, so attention transfer and the
distillers need no rewritten forward pass: name the module paths (the architecture's by default).

A tap is a module path (its output), ``path:in`` (its input: the pooled vector a classifier reads)
or ``relu:path`` (its output after a ReLU the model applies functionally, outside any module).
RepDistiller's feature list, which its distillers index, is ``[stem, *groups, pooled]``; architectures
name its parts (``stem_layer``, ``feature_layers``, ``pooled_layer``, ``preact_layers``)."""

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


def repdistiller_layers(model, arch: str, role: str, preact: bool = False) -> list[str]:
    """The taps of RepDistiller's ``model(x, is_feat=True, preact=preact)`` list: stem, groups, pooled."""
    stem, pooled = getattr(model, "stem_layer", None), getattr(model, "pooled_layer", None)
    groups = getattr(model, "preact_layers" if preact else "feature_layers", None)
    if not (stem and pooled and groups):
        what = "pre-activation " if preact else ""
        raise UsageError(f"{role} architecture '{arch}' names no {what}feature taps for the distillers (stem, groups, "
                         f"pooled); use one of the CIFAR architectures in `toolbox models`, or distil with --loss kd")
    return [stem, *groups, pooled]


def _parse(spec: str) -> tuple[str, str, bool]:
    """-> (module path, 'out' or 'in', relu after?)"""
    relu = spec.startswith("relu:")
    path = spec[5:] if relu else spec
    where = "out"
    if path.endswith(":in"):
        path, where = path[:-3], "in"
    return path, where, relu


class FeatureTap:
    """Records the taps ``layers`` (in that order) on every forward pass of ``model``."""

    def __init__(self, model, layers: list[str], arch: str, role: str):
        modules = dict(model.named_modules())
        parsed = [_parse(spec) for spec in layers]
        missing = [spec for spec, (path, _, _) in zip(layers, parsed) if path not in modules]
        if missing:
            raise UsageError(f"{role} '{arch}' has no module '{missing[0]}' to tap; "
                             f"valid module paths include: {_some_modules(model)}")
        self.layers = list(layers)
        self.outputs: dict[int, torch.Tensor] = {}
        self._handles = []
        for k, (path, where, relu) in enumerate(parsed):
            keep = self._keeper(k, relu)
            if where == "in":
                self._handles.append(modules[path].register_forward_pre_hook(lambda m, inputs, keep=keep: keep(inputs[0])))
            else:
                self._handles.append(modules[path].register_forward_hook(lambda m, inputs, out, keep=keep: keep(out)))

    def _keeper(self, k: int, relu: bool):
        def keep(t):
            self.outputs[k] = torch.relu(t) if relu else t
        return keep

    def __call__(self, model, x):
        """(logits, [features]) of one forward pass."""
        self.outputs = {}
        logits = model(x)
        feats = [self.outputs[k] for k in range(len(self.layers))]
        self.outputs = {}
        return logits, feats

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def feature_shapes(tap, model, input_shape, device) -> list[torch.Size]:
    """The shapes of ``model``'s tapped features on two zero images, in eval mode (the reference probes
    with a batch of two as well)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        _, feats = tap(model, torch.zeros(2, *input_shape, device=device))
    model.train(was)
    return [f.shape for f in feats]


def check_attention_pairs(student_tap, teacher_tap, student, teacher, input_shape, device, pool: bool = False) -> None:
    """One forward pass on zeros: the matched maps must pair up and agree in spatial size (unless
    ``pool``: then the larger is pooled to the smaller)."""
    if len(student_tap.layers) != len(teacher_tap.layers):
        raise UsageError(f"attention transfer pairs layers one to one: student has {len(student_tap.layers)} "
                         f"({', '.join(student_tap.layers)}), teacher {len(teacher_tap.layers)} ({', '.join(teacher_tap.layers)})")
    s_shapes = feature_shapes(student_tap, student, input_shape, device)
    t_shapes = feature_shapes(teacher_tap, teacher, input_shape, device)
    for s_name, t_name, s, t in zip(student_tap.layers, teacher_tap.layers, s_shapes, t_shapes):
        if len(s) != 4 or len(t) != 4 or (s[-2:] != t[-2:] and not pool):
            raise UsageError(f"attention maps differ in size: student '{s_name}' gives {tuple(s[2:])}, teacher "
                             f"'{t_name}' {tuple(t[2:])}; match layers with the same resolution, or pool the "
                             "larger map as RepDistiller does (-o loss.at_pool=true)")
