"""The contract between core and plugins.

Every hook is called with keyword arguments. An implementation may accept any subset of a hook's
arguments, so new arguments can be added without breaking plugins; arguments are never renamed.

Registration hooks are called once, when the plugins are loaded, with a ``register`` callback; core
owns the names and reports collisions. Operation hooks are ``firstresult`` and are dispatched only
to the plugin that registered the requested method, so a plugin never sees another's method names.
Keep module-level imports of a plugin light (no torch): ``toolbox --help`` and ``toolbox plugins``
load plugins without needing torch.
"""

import pluggy

hookspec = pluggy.HookspecMarker("toolbox")
hookimpl = pluggy.HookimplMarker("toolbox")


# --- registration -------------------------------------------------------------------------------


@hookspec
def register_methods(register):
    """Register methods: call ``register(toolbox.registry.Method(...))`` once per method.

    A method names the verbs it answers (train, distill, condense, evaluate, export), its recipe
    schema (a pydantic model deriving from ``toolbox.recipes.RecipeBase``), its default recipe and
    its CLI shortcuts. Called once at plugin load.
    """


@hookspec
def register_architectures(register):
    """Register model constructors: ``register(toolbox.registry.Architecture(name, build, summary))``.

    ``build(num_classes=, in_channels=, image_size=, **kwargs)`` returns an ``nn.Module`` whose
    ``forward(x)`` returns logits. Import torch inside ``build``, not at module level.
    """


@hookspec
def register_datasets(register):
    """Register datasets: ``register(toolbox.registry.DatasetSpec(...))``.

    ``load()`` returns ``(train_x, train_y, test_x, test_y)``, images float32 in [0, 1] as
    [N, C, H, W] and labels int64; the spec carries the normalisation mean and std.
    """


@hookspec
def register_loggers(register):
    """Register metrics sinks: ``register(toolbox.registry.Logger(name, open, summary, install))``.

    ``toolbox train ... --log NAME`` opens the sink when the run starts (``open(run_dir, info)``, info
    being run.json's content) and sends it every ``run.log(step, **metrics)`` (``sink.log(step,
    metrics)``) and ``sink.close()`` at the end; metrics.jsonl is written either way. Core registers
    ``tensorboard`` and ``mlflow``.
    """


@hookspec
def register_recipes(register):
    """Register folders of recipe YAML files: ``register(path)`` (a Path or importlib Traversable).

    Recipes are listed by ``toolbox recipes`` and can be named with ``-r <folder>/<name>``.
    """


# --- operations (dispatched to the plugin that registered ``method``) ------------------------------


@hookspec(firstresult=True)
def train(method, recipe, run):
    """Train with ``method``.

    recipe: the validated recipe (an instance of the method's schema).
    run: a ``toolbox.runs.Run``: run directory, device, seeding, progress, metrics.jsonl,
        checkpoint/resume, and ``run.save_model`` for the final artifact.
    Returns a dict of final metrics (also written to metrics.jsonl and summary.json).
    """


@hookspec(firstresult=True)
def distill(method, recipe, run):
    """Distil a teacher into a student with ``method``; arguments and result as for ``train``."""


@hookspec(firstresult=True)
def condense(method, recipe, run):
    """Condense a dataset into a small synthetic set with ``method``; as for ``train``."""


@hookspec(firstresult=True)
def evaluate(method, source, options, device, out):
    """Evaluate an artifact produced by ``method``.

    source: a ``toolbox.artifacts.Source`` (local folder holding config.json, plus its origin,
        e.g. the Hub repo and commit it was pulled from).
    options: dict of evaluation options from the CLI (``metric``, and method-specific ones).
    device: torch.device to evaluate on. out: folder for files the evaluation writes (plots).
    Returns ``{"metrics": {name: float}, ...}``; extra keys (tables, protocol) are kept in --json.
    """


@hookspec(firstresult=True)
def export(method, source, format, path):
    """Export an artifact of ``method`` to ``format`` at ``path``; return the written path.

    Core exports plain classifiers itself; implement this only for artifacts it cannot handle.
    """
