"""KD's hooks: registration and dispatch only (no torch at import)."""

from toolbox.hookspecs import hookimpl
from toolbox.registry import Method, Option


@hookimpl
def register_methods(register):
    register(Method(
        name="kd",
        verbs=("distill", "train", "evaluate"),
        summary="Knowledge distillation: Hinton KD, attention transfer, few-shot KD+AT (the ZSKT paper's baseline) "
                "and the zoo of RepDistiller's and the seed papers' distillers",
        schema="toolbox_kd.recipe:KDRecipe",
        default_recipe="kd/digits",
        options={
            "teacher": Option("teacher.source", "teacher run dir, model folder or hf-hub:org/name@rev"),
            "student": Option("student.arch", "student architecture (see `toolbox models`)"),
            "dataset": Option("data.dataset", "dataset"),
            "loss": Option("loss.kind", "ce, kd, at, kd+at, a zoo distiller (crd, fitnet, ...) or kd+<distiller>"),
            "shots": Option("data.shots", "real images per class (0 = the whole training split)"),
            "epochs": Option("schedule.epochs", "epochs of the full-data schedule (scaled up for few shots)"),
        },
        paper="Hinton et al. 2015 (arXiv:1503.02531); Zagoruyko & Komodakis 2017 (arXiv:1612.03928)",
        metrics={"accuracy": "fraction of the test split the final student classifies correctly",
                 "loss": "the distillation objective (CE, KD, AT or a zoo distiller's terms), mean over the last epoch"},
    ))


@hookimpl
def distill(method, recipe, run):
    from .method import train_kd

    return train_kd(recipe, run)


@hookimpl
def train(method, recipe, run):
    from .method import train_kd

    return train_kd(recipe, run)


@hookimpl
def evaluate(method, source, options, device, out):
    from toolbox.distilled import evaluate_student

    return evaluate_student(source, options, device, out, method=method)
