"""ZSKT's hooks: registration and dispatch only (no torch at import)."""

from toolbox.hookspecs import hookimpl
from toolbox.registry import Method, Option


@hookimpl
def register_methods(register):
    register(Method(
        name="zskt",
        verbs=("train", "distill", "evaluate"),
        summary="Zero-shot knowledge transfer by adversarial belief matching: a student learns from a teacher "
                "without any real training image (Micaelli & Storkey 2019)",
        schema="toolbox_zskt.recipe:ZSKTRecipe",
        default_recipe="zskt/digits",
        options={
            "teacher": Option("teacher.source", "teacher run dir, model folder or hf-hub:org/name@rev"),
            "student": Option("student.arch", "student architecture (a wrn-*)"),
            "dataset": Option("data.dataset", "dataset whose test split measures the student"),
            "iterations": Option("iterations", "number of generator/student iterations"),
        },
        paper="arXiv:1905.09768",
        metrics={
            "accuracy": "fraction of the test split the zero-shot student classifies correctly (it never saw a "
                        "training image)",
            "agreement": "fraction of test images on which student and teacher predict the same class",
            "dominant_class_fraction": "share of test images given the student's most frequent class "
                                       "(near 1 = collapsed onto one class)",
            "collapsed": "true when the student predicts (almost) one class or sits near chance: the game failed",
            "iterations": "generator/student iterations run",
        },
    ))


@hookimpl
def train(method, recipe, run):
    from .method import train_zskt

    return train_zskt(recipe, run)


@hookimpl
def distill(method, recipe, run):
    from .method import train_zskt

    return train_zskt(recipe, run)


@hookimpl
def evaluate(method, source, options, device, out):
    from toolbox.distilled import evaluate_student

    return evaluate_student(source, options, device, out, method=method)
