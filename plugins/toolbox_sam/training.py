"""The sam method: core's classifier loop with SGD wrapped in SAM / ASAM / Fisher-SAM, on optionally
noisy labels (the setting where flat minima pay off)."""

from __future__ import annotations

from toolbox import data
from toolbox.classifier import evaluate_accuracy, fit

from .noise import symmetric_label_noise

__all__ = ["train_sam", "evaluate_accuracy"]


def train_sam(recipe, run) -> dict:
    real = data.load(recipe.data.dataset)
    train_y = symmetric_label_noise(real.train_y, real.num_classes, recipe.data.label_noise, recipe.data.label_noise_seed)
    s = recipe.sam
    kind = "plain" if s.radius <= 0 else "fisher-sam" if s.fisher else "asam" if s.adaptive else "sam"
    model, final = fit(recipe, run, real, real.normalized_train(), train_y,
                       f"{kind} {recipe.model.arch} on {real.name}")
    run.save_model(model, arch=recipe.model.arch, arch_kwargs=recipe.model.kwargs, dataset=real.spec, metrics=final,
                   extra={"sam": {"kind": kind, **s.model_dump()},
                          "label_noise": {"fraction": recipe.data.label_noise, "seed": recipe.data.label_noise_seed}})
    return final
