"""FDS's hooks: registration and dispatch only (no torch at import)."""

from toolbox.hookspecs import hookimpl
from toolbox.registry import Method, Option, recipes_by_dataset_and_arch


@hookimpl
def register_methods(register):
    register(Method(
        name="fds",
        verbs=("train", "evaluate"),
        summary="Learn a learning-rate schedule, momentum and weight decay by forward-mode hypergradients "
                "shared over windows of the horizon, then retrain with it (Micaelli & Storkey 2021)",
        schema="toolbox_fds.recipe:FDSRecipe",
        default_recipe="fds/digits",
        choose_recipe=recipes_by_dataset_and_arch("fds"),
        options={
            "dataset": Option("data.dataset", "dataset name (see `toolbox datasets`)"),
            "arch": Option("model.arch", "architecture (see `toolbox models`)"),
            "outer-steps": Option("outer_steps", "maximum number of hyperparameter updates"),
            "inner-epochs": Option("inner_epochs", "epochs of every unrolled inner loop"),
            "lrs": Option("hyper.num_lrs", "number of learning rates shared over the horizon (K)"),
        },
        paper="arXiv:2007.07869",
        metrics={"accuracy": "test accuracy of a model retrained from scratch with the learned schedule",
                 "outer_steps": "hyperparameter updates made", "converged": "whether the sign steps became small"},
    ))


@hookimpl
def train(method, recipe, run):
    from .method import train_fds

    return train_fds(recipe, run)


@hookimpl
def evaluate(method, source, options, device):
    from toolbox.classifier import evaluate_classifier

    return evaluate_classifier(source, options, device, method, config_keys=("schedule",))
