"""The plugin's contract with toolbox: what it registers and the hooks it answers.

Imported whenever toolbox loads plugins (even for ``toolbox --help``), so it imports no torch:
the training code is imported inside the hooks that need it.
"""

from toolbox.hookspecs import hookimpl
from toolbox.registry import Method, Option


@hookimpl
def register_methods(register):
    register(Method(
        name="mixup",
        verbs=("train", "evaluate"),
        summary="mixup: train on convex combinations of image pairs and of their labels (Zhang et al. 2018)",
        schema="toolbox_mixup.recipe:MixupRecipe",  # imported on first validation, not at load
        default_recipe="mixup/digits",
        options={
            "dataset": Option("data.dataset", "dataset name (see `toolbox datasets`)"),
            "arch": Option("model.arch", "architecture (see `toolbox models`)"),
            "alpha": Option("alpha", "mixing strength: lambda ~ Beta(alpha, alpha); 0 = plain training"),
            "epochs": Option("epochs", "number of epochs"),
            "lr": Option("optim.lr", "learning rate"),
        },
        paper="Zhang et al., mixup: Beyond Empirical Risk Minimization, ICLR 2018 (arXiv:1710.09412)",
    ))


@hookimpl
def register_recipes(register):
    from importlib.resources import files

    # recipes/mixup/digits.yaml is then listed by `toolbox recipes` as mixup/digits
    register(files("toolbox_mixup") / "recipes")


@hookimpl
def train(recipe, run):
    from .training import train_mixup

    return train_mixup(recipe, run)


@hookimpl
def evaluate(method, source, options, device):
    from toolbox.classifier import evaluate_classifier  # the artifact is a plain classifier

    return evaluate_classifier(source, options, device, method, config_keys=("alpha",))
