"""Read-only verbs: plugins, methods, models, datasets, recipes (tables, or --json for machines)."""

from __future__ import annotations

import fnmatch
import json

import click

from ..errors import UsageError


def _table(title, columns, rows):
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for i, c in enumerate(columns):
        # the first column is a name to copy: whole, never wrapped inside
        table.add_column(c, overflow="fold", no_wrap=i == 0)
    for r in rows:
        table.add_row(*[Text(str(x)) for x in r])  # plain text: "[conv 128, ...]" is not rich markup
    Console().print(table)


def _json(data):
    click.echo(json.dumps(data, indent=2, default=str))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json):
    """Installed plugins: version, hooks, methods; and plugins that failed to load, with their error."""
    from .. import plugins as plugin_loader

    pm = plugin_loader.load()
    rows = [{"name": p.name, "distribution": p.dist, "version": p.version, "hooks": p.hooks, "methods": p.methods,
             "status": "loaded"} for p in pm.loaded if p.name != plugin_loader.CORE]
    rows += [{"name": f.name, "distribution": f.dist, "version": f.version, "hooks": [], "methods": [],
              "status": "failed", "error": f.error} for f in pm.failed]
    conflicts = list(pm.registry.conflicts.values())
    if as_json:
        return _json(rows + [{"name": None, "status": "conflict", "error": c} for c in conflicts])
    _table("plugins", ["name", "version", "hooks", "methods", "status"],
           [(r["name"], r["version"] or "", ", ".join(r["hooks"]), ", ".join(r["methods"]), r["status"]) for r in rows])
    for f in pm.failed:  # one unwrapped line each, below the table: a table cell would fold it
        click.echo(plugin_loader.format_failure(f), err=True)
    for c in conflicts:
        click.echo(f"conflict: {c}", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True)
def methods(as_json):
    """Registered methods: verbs, plugin, summary, default recipe and options."""
    from .. import plugins as plugin_loader

    reg = plugin_loader.load().registry
    rows = [{"name": m.name, "verbs": list(m.verbs), "plugin": m.plugin, "summary": m.summary,
             "default_recipe": m.default_recipe, "options": {f"--{k}": o.key for k, o in m.options.items()},
             "paper": m.paper} for m in sorted(reg.methods.values(), key=lambda m: m.name)]
    if as_json:
        return _json(rows)
    # a block per method, not a six-column table: at 80 columns that wraps every cell mid-word
    import shutil
    import textwrap

    width = min(shutil.get_terminal_size((80, 24)).columns, 100)
    for r in rows:
        click.echo(f"{r['name']}  ({', '.join(r['verbs'])}; plugin {r['plugin']})")
        for text in (r["summary"], f"default recipe: {r['default_recipe'] or 'none'}",
                     f"options: {' '.join(r['options']) or 'none'} (toolbox <verb> {r['name']} --help)"):
            click.echo(textwrap.fill(text, width, initial_indent="    ", subsequent_indent="    ",
                                     break_long_words=False, break_on_hyphens=False))


@click.command()
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True)
def models(pattern, as_json):
    """Registered architectures matching PATTERN (fnmatch, e.g. '*wrn*')."""
    from .. import plugins as plugin_loader

    rows = [{"name": a.name, "summary": a.summary, "kwargs": a.kwargs, "plugin": a.plugin}
            for a in plugin_loader.load().registry.match_architectures(pattern)]
    if as_json:
        return _json(rows)
    _table(f"architectures matching '{pattern}'", ["name", "summary", "plugin"],
           [(r["name"], r["summary"], r["plugin"]) for r in rows])


@click.command()
@click.argument("ref", required=False)
@click.option("--json", "as_json", is_flag=True)
def datasets(ref, as_json):
    """Registered datasets, where they are looked for, and whether they are present; with REF (a folder
    of class subfolders or hf-hub:org/name@rev), that dataset's classes, counts, image sizes, split and
    statistics cache."""
    from .. import plugins as plugin_loader

    if ref:
        return _describe_dataset(ref, as_json)
    rows = [{"name": d.name, "classes": d.num_classes, "shape": list(d.shape), "where": d.where(),
             "present": d.present(), "files": list(d.files), "plugin": d.plugin}
            for d in sorted(plugin_loader.load().registry.datasets.values(), key=lambda d: d.name)]
    if as_json:
        return _json(rows)
    # a block per dataset: in a table, the folder paths and file names wrapped mid-name at 80 columns
    for r in rows:
        state = "present" if r["present"] else "not on disk"
        click.echo(f"{r['name']}  ({r['classes']} classes, {'x'.join(map(str, r['shape']))}, {state})")
        click.echo(f"    where: {r['where']}")
        if r["files"] and not r["present"]:
            click.echo("    files: " + "\n           ".join(r["files"]))
    click.echo("your own: toolbox datasets ./folder (class subfolders) or hf-hub:org/name@rev")


def _describe_dataset(ref: str, as_json: bool):
    from .. import plugins as plugin_loader
    from ..data import refs

    registry = plugin_loader.load().registry
    canonical = refs.canonical(ref, registry.datasets)
    if refs.kind(refs.split_options(canonical)[0], registry.datasets) == "name":
        d = registry.dataset(canonical)
        info = {"ref": d.name, "where": d.where(), "classes": list(d.classes), "shape": list(d.shape),
                "present": d.present(), "summary": d.summary, "statistics": {"mean": list(d.mean), "std": list(d.std)}}
        if as_json:
            return _json(info)
        for key in ("ref", "summary", "where", "present", "shape"):
            click.echo(f"{key}: {info[key]}")
        click.echo(f"classes ({len(d.classes)}): {', '.join(d.classes)}")
        return None
    from ..data.sources import describe, scan

    info = describe(scan(canonical))
    if as_json:
        return _json(info)
    names = info["classes"]
    click.echo(f"dataset: {info['ref']}")
    click.echo(f"where: {info['where']}")
    source = info["source"]
    if source.get("commit"):
        click.echo(f"commit: {source['commit']}")
    else:
        click.echo(f"fingerprint: {source.get('fingerprint')} ({source.get('files')} files)")
    split = info["split"] or {}
    how = (f"{split.get('train')}/ and {split.get('test')}/ folders" if split.get("kind") == "folders" else
           f"stratified, {split.get('test_fraction')} of each class for testing, seed {split.get('seed')}"
           if split.get("kind") == "stratified" else f"files: {', '.join(split.get('splits') or [])}")
    click.echo(f"split: {how}; {info['train']} train / {info['test']} test images")
    sizes = ", ".join(f"{k} ({v})" for k, v in list(info["image_sizes"].items())[:5])
    click.echo(f"image sizes: {sizes}; decoded as {'x'.join(map(str, info['shape']))} (channels x height x width)")
    click.echo(f"classes ({len(names)}):")
    for name, n in zip(names, info["per_class_train"]):
        click.echo(f"  {name}: {n} train")
    stats = info["statistics"]
    click.echo(f"statistics cache: {info['cache']}" + (f" (mean {stats['mean']}, std {stats['std']})" if stats
                                                      else " (not computed yet: the first run computes it)"))
    return None


@click.command()
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True)
def recipes(pattern, as_json):
    """Recipes shipped in recipes/ and by plugins, with the published number each targets."""
    from ..recipes import list_recipes

    rows = [r for r in list_recipes() if fnmatch.fnmatch(r["name"], pattern)]
    if as_json:
        return _json(rows)

    def expect(e):
        if not isinstance(e, dict) or "value" not in e:
            return ""
        std = f" ± {e['std']}" if e.get("std") is not None else ""
        return f"{e.get('metric', 'accuracy')} {e['value']}{std}"

    _table("recipes", ["name", "method", "expects", "source"],
           [(r["name"], r["method"], expect(r["expect"]), (r["expect"] or {}).get("source", "")) for r in rows])


@click.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--open", "open_images", is_flag=True, help="Open the run's images in this system's image viewer.")
def show(run, as_json, open_images):
    """A run's summary: final metrics and what they mean, the expected number, its images."""
    from pathlib import Path

    from ..artifacts import read_run_json
    from ..summary import describe, print_summary

    read_run_json(Path(run))  # not a run, or a garbage run.json: one line
    if as_json:
        return _json(describe(Path(run)))
    print_summary(Path(run))
    if open_images:
        for image in describe(Path(run))["images"]:
            click.launch(image)


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--by", help="Comma-separated keys that tell groups apart: method, dataset, teacher, student, ipc, "
                           "loss, seed, world_size or any recipe key (e.g. data.batch_size). Default: those of "
                           "method, dataset, teacher, student, ipc, loss that the runs have.")
@click.option("--metric", help="The summary number to compare (default: the one the recipes expect, else accuracy).")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print a Markdown table.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write the comparison as a PNG bar chart.")
@click.option("--force", is_flag=True, help="Replace an existing --plot file.")
def compare(runs, by, metric, as_markdown, as_json, plot, force):
    """Finished runs as one table: runs that differ only by seed form a group, shown as mean ± std of
    METRIC over its runs beside the number its recipe expects and the difference.

    \b
    toolbox compare runs/kd-*                    RUNS: run folders, or folders holding runs
    toolbox compare runs --by method,student --metric accuracy --markdown > table.md
    """
    from pathlib import Path

    from .. import compare as comparing

    if plot and Path(plot).exists() and not force:
        raise UsageError(f"--plot {plot} already exists; choose another path or pass --force to replace it")
    keys = [k.strip() for k in by.split(",") if k.strip()] if by else None
    if by is not None and not keys:
        raise UsageError("--by needs at least one key, e.g. --by method,student")
    result = comparing.compare(runs, keys, metric)
    if plot:
        result["plot"] = str(comparing.plot(result, plot))
    if as_json:
        return _json(result)
    if as_markdown:
        click.echo(comparing.markdown(result), nl=False)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    header, body = comparing.rows(result)
    table = Table(title=f"{result['metric']}: mean ± std over each group's runs")
    for i, c in enumerate(header):
        table.add_column(c, no_wrap=i >= len(header) - 4, overflow="fold")  # numbers whole
    for cells in body:
        table.add_row(*[Text(x) for x in cells])
    Console().print(table)
    for source in comparing.sources(result):
        click.echo(f"expected: {source}")
    for protocol in comparing.protocols(result):
        click.echo(f"protocol: {protocol}")
    for why in result["skipped"]:
        click.echo(f"left out: {why}")
    if plot:
        click.echo(f"plot:\n  {result['plot']}")
