"""Built-in plugin: plain supervised training of a classifier (the teachers of the papers)."""

from toolbox.hookspecs import hookimpl
from toolbox.registry import Method, Option, recipes_by_dataset_and_arch


@hookimpl
def register_methods(register):
    register(Method(
        name="supervised",
        verbs=("train", "evaluate"),
        summary="Supervised training of a classifier with SGD (the papers' teachers); also on a condensed set",
        schema="toolbox_supervised.recipe:SupervisedRecipe",
        default_recipe="supervised/digits",
        choose_recipe=recipes_by_dataset_and_arch("supervised"),
        options={
            "dataset": Option("data.dataset", "dataset name (see `toolbox datasets`)"),
            "arch": Option("model.arch", "architecture (see `toolbox models`)"),
            "data": Option("data.synthetic", "train on a condensed set: a condense run dir or hf-hub: ref"),
            "epochs": Option("epochs", "number of epochs"),
            "lr": Option("optim.lr", "learning rate"),
            "batch-size": Option("data.batch_size", "batch size"),
        },
        paper="",
    ))


@hookimpl
def train(method, recipe, run):
    from .training import train_classifier

    return train_classifier(recipe, run)


@hookimpl
def evaluate(method, source, options, device):
    from toolbox.classifier import evaluate_classifier

    return evaluate_classifier(source, options, device, method)
