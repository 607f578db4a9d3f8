"""Options shared by the verbs, and parsing of method-specific ``--name value`` options."""

from __future__ import annotations

import click

from ..errors import UsageError


def run_options(f):
    """-r/-o/--device/--out/--resume/--seed/--threads/--debug for train, distill and condense."""
    decorators = [
        click.option("-r", "--recipe", help="Recipe file or name (see `toolbox recipes`)."),
        click.option("-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a recipe key, e.g. -o optim.lr=0.05 (repeatable)."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--out", type=click.Path(file_okay=False), help="Run directory (default: runs/<verb>-<method>-...)."),
        click.option("--resume", type=click.Path(file_okay=False), help="Continue a killed run from its last checkpoint."),
        click.option("--seed", type=int, help="Shortcut for -o seed=N."),
        click.option("--log", "log", multiple=True, metavar="TRACKER",
                     help="Also send metrics to a tracker: tensorboard, mlflow or a plugin's (repeatable)."),
        threads_option(),
        nproc_option(),
        click.option("--debug", is_flag=True, help="Show full tracebacks."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


MAX_THREADS = 1024


def _bounded_int(name: str, most: int, help: str):
    """An integer option from 1 to ``most``; 0 or a negative number is refused, not ignored."""
    def check(ctx, param, value):
        if value is not None and not 1 <= value <= most:
            raise click.BadParameter(f"must be an integer from 1 to {most} (got {value})")
        return value

    return click.option(name, type=int, callback=check, help=help)


def threads_option():
    return _bounded_int("--threads", MAX_THREADS, "CPU threads for torch (small nets often run faster on 1).")


MAX_NPROC = 1024


def nproc_option():
    """--nproc N: run as N ranks on this machine (torchrun's launcher); each rank applies --device and --threads."""
    return _bounded_int("--nproc", MAX_NPROC, "Run as N processes on this machine (data parallel; one per GPU on CUDA).")


def maybe_relaunch(nproc) -> bool:
    """Start this command as ``nproc`` ranks (and return True once they finished) unless it is one already."""
    import os

    if not nproc or nproc == 1:
        return False
    from ..distributed import launched

    if launched():
        return False  # a rank of a job started with torchrun: the job already has its ranks
    if "OMP_NUM_THREADS" not in os.environ:  # N ranks each with every core would fight over them
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    from ..launch import relaunch

    relaunch(nproc)
    return True


EXTRA = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]}


def parse_extra(args, known: dict | None = None) -> dict:
    """``--name value``, ``--name=value`` and ``--flag`` -> {name: value}; checked against ``known``.

    ``known`` maps option names to toolbox.registry.Option; when given, unknown names are errors
    that list the valid ones. Values stay strings (the recipe schema types them).
    """
    out: dict = {}
    args = list(args)
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--") or token == "--":
            raise UsageError(f"unexpected argument '{token}'; method options look like --name value")
        name, eq, value = token[2:].partition("=")
        key = name.replace("-", "_")
        opt = None
        if known is not None:
            norm = {k.replace("-", "_"): v for k, v in known.items()}
            if key not in norm:
                valid = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(norm)) or "none"
                raise UsageError(f"no such option '--{name}' for this method; method options: {valid} "
                                 "(or -o key=value for any recipe key)")
            opt = norm[key]
        if opt is not None and opt.flag:
            if eq:
                raise UsageError(f"option '--{name}' is a flag and takes no value")
            out[key] = True
            i += 1
            continue
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                if known is None:
                    out[key] = True
                    i += 1
                    continue
                raise UsageError(f"option '--{name}' needs a value")
            value = args[i + 1]
            i += 1
        out[key] = value
        i += 1
    return out


def set_threads(n):
    if n is None:
        return
    if not 1 <= int(n) <= MAX_THREADS:
        raise UsageError(f"--threads must be an integer from 1 to {MAX_THREADS} (got {n})")
    import torch

    torch.set_num_threads(int(n))
