"""The operation verbs: train, distill, condense (run a method), evaluate and export (use a result)."""

from __future__ import annotations

import json
import sys

import click

from ..errors import UsageError
from .common import EXTRA, maybe_relaunch, nproc_option, parse_extra, run_options, set_threads, threads_option
from .method_help import MethodCommand


def _execute(ctx, verb, method_name, extra, recipe, overrides, device, out, resume, seed, threads, debug, log=(),
             target=None, nproc=None):
    from .. import plugins, recipes, runs

    ctx.meta["debug"] = debug
    if maybe_relaunch(nproc):
        return
    set_threads(threads)
    pm = plugins.load()
    if resume:
        if extra or recipe or overrides or seed is not None:
            raise UsageError("--resume continues a run with its saved recipe; drop -r/-o/--seed and method options")
        from ..artifacts import read_run_json

        read_run_json(resume)  # a missing or garbage run.json is one line, before anything runs
        run_dir, metrics = runs.execute(verb, method_name or "", device=device, resume=resume, log=log)
        return _report(run_dir, metrics)
    if not method_name:
        raise UsageError(f"name a method: toolbox {verb} METHOD (see `toolbox methods`), or --resume RUN_DIR")
    try:
        method = pm.registry.method(method_name, verb)
    except UsageError as e:
        failed = [f for f in pm.failed if f.name == method_name]
        if failed:
            raise UsageError(f"{e}; note: {plugins.format_failure(failed[0])}") from None
        raise
    values = parse_extra(extra, method.options)
    if target is not None:  # `toolbox condense DATASET`: the dataset is given once, by its argument
        typed = values.get("dataset") or next((o.partition("=")[2].strip() for o in overrides
                                               if o.partition("=")[0].strip() == "data.dataset"), None)
        if typed is not None and typed != target:
            raise UsageError(f"two datasets given, '{target}' and '{typed}'; name the dataset once: "
                             f"toolbox {verb} {typed} ...")
        values["dataset"] = target
    if recipe is None and method.choose_recipe is not None:
        recipe = next((name for name in method.choose_recipe(dict(values)) if recipes.recipe_exists(name)), None)
    option_overrides = []
    for name, value in values.items():
        opt = {k.replace("-", "_"): v for k, v in method.options.items()}.get(name)
        if opt is None:
            raise UsageError(f"method '{method.name}' has no option '--{name.replace('_', '-')}'")
        option_overrides.append(f"{opt.key}={'true' if value is True else value}")
    all_overrides = option_overrides + ([f"seed={seed}"] if seed is not None else []) + list(overrides)
    run_dir, metrics = runs.execute(verb, method.name, recipe, all_overrides, out=out, device=device, log=log)
    _report(run_dir, metrics)


def _report(run_dir, metrics):
    from ..distributed import is_main
    from ..summary import print_summary

    if not is_main():
        return
    print_summary(run_dir)
    click.echo(f"evaluate it: toolbox evaluate {run_dir}\nshow it again: toolbox show {run_dir}")


@click.command(cls=MethodCommand, context_settings=EXTRA)
@click.argument("method", required=False)
@run_options
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def train(ctx, method, extra, **kw):
    """Train with METHOD (e.g. supervised, zskt); `toolbox train METHOD --help` lists its options."""
    _execute(ctx, "train", method, extra, **kw)


@click.command(cls=MethodCommand, context_settings=EXTRA)
@click.argument("method", required=False)
@run_options
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def distill(ctx, method, extra, **kw):
    """Distil a teacher into a student with METHOD (e.g. kd, zskt); `toolbox distill METHOD --help` lists its options."""
    _execute(ctx, "distill", method, extra, **kw)


@click.command(cls=MethodCommand, context_settings=EXTRA)
@click.argument("dataset", required=False)
@click.option("--method", "method_name", default="dc", show_default=True, help="Condensation method (dc, dsa, dm, ...).")
@run_options
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def condense(ctx, dataset, method_name, extra, **kw):
    """Condense DATASET into a few synthetic images per class (--method dc|dsa|dm, --ipc N)."""
    if not dataset and not kw.get("resume"):
        raise UsageError("name a dataset: toolbox condense DATASET (see `toolbox datasets`)")
    if kw.get("resume") and ctx.get_parameter_source("method_name") == click.core.ParameterSource.DEFAULT:
        method_name = None  # the run's own method, whichever it is; a typed --method must match it
    _execute(ctx, "condense", method_name, extra, target=dataset, **kw)


@click.command(context_settings=EXTRA)
@click.argument("source")
@click.option("--metric", default=None, help="What to measure (default: the method's main metric, e.g. accuracy).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="Folder for files the evaluation writes (default: <run>/eval).")
@threads_option()
@nproc_option()
@click.option("--debug", is_flag=True)
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def evaluate(ctx, source, metric, as_json, device, out, threads, nproc, debug, extra):
    """Evaluate a run directory, a model folder or hf-hub:org/name[@rev].

    Dispatched to the plugin of the method that produced SOURCE, unless --metric names a method
    registered with the "evaluate" verb (e.g. gradient-leakage, hessian): such metric methods audit
    any run, so they take precedence over the run's own method.

    With --nproc N a method that splits its evaluation (condensation: its N models) shares it
    between the ranks; any other evaluates on rank 0 while the rest wait. Rank 0 alone writes and prints.
    """
    from pathlib import Path

    from .. import artifacts, distributed, plugins, runs

    ctx.meta["debug"] = debug
    if maybe_relaunch(nproc):
        return
    set_threads(threads)
    options = parse_extra(extra)
    options["metric"] = metric
    src = artifacts.resolve_source(source)
    config = artifacts.read_config(src.path)
    pm = plugins.load()
    metric_method = pm.registry.methods.get(metric) if metric else None
    dev = distributed.init(runs.resolve_device(device))
    main = distributed.is_main()
    if metric_method is not None and "evaluate" in metric_method.verbs:
        method = metric_method
    elif config.get("method") not in pm.registry.methods:
        result = distributed.from_main(lambda: _without_plugin(pm, src, config, options, dev))
        return _print_evaluation(result, config.get("method"), src, as_json) if main else None
    else:
        method = pm.registry.method(config.get("method", "?"), "evaluate")
    out_dir = Path(out) if out else (src.path / "eval" if src.repo is None else Path("runs") / "eval")
    created = not out_dir.exists()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)

    def call():
        return pm.call("evaluate", method, source=src, options=options, device=dev, out=out_dir)

    try:
        result = call() if method.evaluate_on_ranks else distributed.from_main(call)
    except BaseException:
        if main and created and not any(out_dir.iterdir()):  # a refused evaluation leaves no empty folder behind
            out_dir.rmdir()
        raise
    if main:
        _print_evaluation(dict(result or {}), method.name, src, as_json)


def _without_plugin(pm, src, config: dict, options: dict, device) -> dict:
    """An artifact whose method no installed plugin provides: core evaluates a plain classifier's
    accuracy; anything else is refused, naming the distribution that made it."""
    from .. import plugins
    from ..artifacts import MODEL_FORMAT
    from ..classifier import evaluate_classifier

    name = config.get("method") or "?"
    dist = config.get("distribution") or _run_distribution(src.path)
    failed = next((f for f in pm.failed if f.name == config.get("plugin")), None)
    why = (f"its plugin failed to load ({plugins.format_failure(failed)})" if failed else
           f"install its distribution: pip install {dist}" if dist else "no installed plugin provides it")
    if config.get("format") != MODEL_FORMAT:
        raise UsageError(f"{src.ref} was made by method '{name}', which is not available "
                         f"here; {why}")
    result = evaluate_classifier(src, options, device, name)
    result["notes"] = (f"method '{name}' is not available here ({why}); evaluated by core as a plain classifier: "
                       "test accuracy only")
    return result


def _run_distribution(folder) -> str | None:
    from pathlib import Path

    try:
        return json.loads((Path(folder) / "run.json").read_text()).get("distribution")
    except (OSError, ValueError, AttributeError):
        return None


def _print_evaluation(result: dict, method_name: str, src, as_json: bool) -> None:
    result.setdefault("source", src.describe())
    result.setdefault("method", method_name)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    click.echo(f"{method_name} evaluation of\n  {src.ref}")  # a path or ref on its own line: never wrapped mid-name
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.get("metrics", {}).items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    console = Console()
    console.print(table)
    for key in ("protocol", "files", "notes"):
        if result.get(key):
            console.print(f"[bold]{key}:[/] {json.dumps(result[key], default=str) if not isinstance(result[key], str) else result[key]}")


@click.command()
@click.argument("source")
@click.option("--format", "fmt", type=click.Choice(["safetensors", "onnx", "torch-export"]), default="safetensors",
              show_default=True)
@click.option("-o", "--output", type=click.Path(), help="Output path (default: <run>/export/model.<ext>).")
@click.option("--force", is_flag=True, help="Replace existing export files (never a run's own files).")
@click.option("--debug", is_flag=True)
@click.pass_context
def export(ctx, source, fmt, output, force, debug):
    """Export a trained model (run dir or hf-hub:) to safetensors, ONNX or a torch.export program."""
    from ..export import export_model

    ctx.meta["debug"] = debug
    path = export_model(source, fmt, output, force=force)
    click.echo(str(path))
    sys.stdout.flush()


@click.command(name="import")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--arch", required=True, help="The architecture the weights are for (see `toolbox models`).")
@click.option("--dataset", required=True, help="The dataset it was trained on: its classes, shape and normalisation.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The new model folder.")
@click.option("--debug", is_flag=True)
@click.pass_context
def import_checkpoint(ctx, checkpoint, arch, dataset, out, debug):
    """Turn a published PyTorch checkpoint (e.g. a paper's teacher) into a toolbox model folder.

    Reads weights only (torch's weights-only loader: no code runs), accepts tensors only, maps
    the checkpoint's key names onto ARCH strictly and records the file's sha256.
    """
    from ..checkpoint_import import import_checkpoint as do_import

    ctx.meta["debug"] = debug
    result = do_import(checkpoint, arch, dataset, out)
    click.echo(f"imported {result['tensors']} tensors ({result['imported_from']['layout']} layout) into\n  {out}\n"
               f"test it: toolbox evaluate {out}")
