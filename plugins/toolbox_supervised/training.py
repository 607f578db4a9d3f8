"""The supervised method: train a classifier on a dataset's train split or on a condensed set."""

from __future__ import annotations

from toolbox import artifacts, data
from toolbox.classifier import fit

from .recipe import check_dataset


def _train_set(recipe):
    """(real ImageData, normalised train x, train y, synthetic Source or None): the real split or a condensed set."""
    if recipe.data.synthetic:
        syn = artifacts.load_synthetic(recipe.data.synthetic)
        check_dataset(recipe.data.synthetic, syn.config["dataset"], recipe.data.dataset)
        real = data.load(syn.config["dataset"])
        return real, syn.images, syn.labels, syn.source
    real = data.load(recipe.data.dataset)
    return real, real.normalized_train(), real.train_y, None  # a tensor, or streamed from disk


def train_classifier(recipe, run) -> dict:
    real, train_x, train_y, syn_source = _train_set(recipe)
    if syn_source is not None:
        run.record(trained_on=syn_source.describe())
    model, final = fit(recipe, run, real, train_x, train_y, f"supervised {recipe.model.arch} on {real.name}")
    run.save_model(model, arch=recipe.model.arch, arch_kwargs=recipe.model.kwargs, dataset=real.spec, metrics=final,
                   extra={"trained_on": syn_source.describe() if syn_source else "real"})
    return final

