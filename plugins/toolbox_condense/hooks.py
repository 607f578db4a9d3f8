"""Plugin hooks of dataset condensation: methods dc, dsa and dm (verbs condense, evaluate).

No torch at import: the algorithms load when a hook runs.
"""

from toolbox.hookspecs import hookimpl
from toolbox.registry import Method, Option

SUMMARIES = {
    "dc": ("Dataset condensation with gradient matching (Zhao, Mopuri & Bilen 2021)", "arXiv:2006.05929"),
    "dsa": ("Dataset condensation with differentiable Siamese augmentation (Zhao & Bilen 2021)", "arXiv:2102.08259"),
    "dm": ("Dataset condensation with distribution matching (Zhao & Bilen 2023)", "arXiv:2110.04181"),
}
# `toolbox condense cifar10` without --ipc: the papers' middle setting
DEFAULT_IPC = {"digits": {"dc": 1, "dsa": 1, "dm": 10}}



def _chooser(method: str):
    def choose(values: dict) -> list[str]:
        dataset = values.get("dataset", "digits")
        ipc = values.get("ipc") or DEFAULT_IPC.get(dataset, {}).get(method, 10)
        return [f"condense/{dataset}-{method}-ipc{ipc}", f"condense/digits-{method}-ipc{DEFAULT_IPC['digits'][method]}"]

    return choose


@hookimpl
def register_methods(register):
    for name, (summary, paper) in SUMMARIES.items():
        register(Method(
            name=name, verbs=("condense", "evaluate"), summary=summary, schema="toolbox_condense.recipe:CondenseRecipe",
            default_recipe=f"condense/digits-{name}-ipc{DEFAULT_IPC['digits'][name]}",
            choose_recipe=_chooser(name),
            evaluate_on_ranks=True,  # the evaluator splits its models between the ranks
            options={
                "ipc": Option("ipc", "synthetic images per class"),
                "dataset": Option("data.dataset", "dataset to condense (see `toolbox datasets`)"),
                "iterations": Option("iterations", "number of condensation iterations"),
                "init": Option("init", "initial synthetic images: noise or real"),
            },
            paper=paper,
            metrics={"accuracy": "mean test accuracy of fresh networks trained on the condensed set only "
                                 "(the papers' protocol, see run.json)",
                     "accuracy_std": "its standard deviation over those networks",
                     "loss": "the matching loss of the last iteration"},
        ))


@hookimpl
def condense(method, recipe, run):
    from .condensation import run_condense

    return run_condense(recipe, run)


@hookimpl
def evaluate(method, source, options, device):
    from .assess import evaluate_condensed

    return evaluate_condensed(source, options, device)
