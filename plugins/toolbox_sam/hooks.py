"""SAM's hooks: registration and dispatch only (no torch at import)."""

from toolbox.errors import UsageError
from toolbox.hookspecs import hookimpl
from toolbox.registry import Method, Option, recipes_by_dataset_and_arch


@hookimpl
def register_methods(register):
    register(Method(
        name="sam",
        verbs=("train", "evaluate"),
        summary="Sharpness-aware minimisation around SGD: SAM (Foret et al. 2021), ASAM (--adaptive), "
                "Fisher-SAM (--fisher, Kim et al. 2022); optional symmetric label noise",
        schema="toolbox_sam.recipe:SAMRecipe",
        default_recipe="sam/digits",
        choose_recipe=recipes_by_dataset_and_arch("sam"),
        options={
            "dataset": Option("data.dataset", "dataset name (see `toolbox datasets`)"),
            "arch": Option("model.arch", "architecture (see `toolbox models`)"),
            "epochs": Option("epochs", "number of epochs"),
            "lr": Option("optim.lr", "learning rate of the base SGD"),
            "rho": Option("sam.rho", "neighbourhood radius (0: plain SGD)"),
            "adaptive": Option("sam.adaptive", "ASAM: neighbourhood scaled by |w|", flag=True),
            "fisher": Option("sam.fisher", "Fisher-SAM: ellipsoid e^T F e <= gamma^2", flag=True),
            "eta": Option("sam.eta", "Fisher-SAM damping F = diag(1 + eta g^2)"),
            "gamma": Option("sam.gamma", "Fisher-SAM radius (default: rho)"),
            "label-noise": Option("data.label_noise", "fraction of training labels flipped (symmetric)"),
        },
        paper="arXiv:2010.01412; arXiv:2102.11600; arXiv:2206.04920",
    ))
    # a metric any classifier run can be asked for: `toolbox evaluate RUN --metric hessian`
    register(Method(
        name="hessian",
        verbs=("evaluate",),
        summary="Sharpness: top eigenvalue of the training-loss Hessian by power iteration "
                "(toolbox evaluate RUN --metric hessian [--split train|test] [--samples N] [--iters N])",
        schema=None,
    ))


@hookimpl
def train(method, recipe, run):
    from .training import train_sam

    return train_sam(recipe, run)


@hookimpl
def evaluate(method, source, options, device):
    metric = options.get("metric") or "accuracy"
    if method == "hessian" or metric == "hessian":
        from .hessian import evaluate_hessian

        return evaluate_hessian(source, options, device)
    if metric != "accuracy":
        raise UsageError(f"sam models support --metric accuracy or hessian, not '{metric}'")
    from toolbox.evaluation import check_options

    check_options(options, (), "evaluating a sam model by accuracy")
    from .training import evaluate_accuracy

    return evaluate_accuracy(source, device)
