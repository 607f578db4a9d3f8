"""install / uninstall: pip, run with the interpreter toolbox itself runs on (works under pipx and venvs).

Neither loads plugins, so a broken plugin can always be removed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click

from ..errors import UsageError

# a PEP 508 name with optional extras and version specifiers (no markers, no shell: pip gets each as one argument)
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REQUIREMENT = re.compile(rf"^{_NAME}(\[\s*{_NAME}(\s*,\s*{_NAME})*\s*\])?"
                          r"(\s*(===|==|!=|~=|>=|<=|>|<)\s*[A-Za-z0-9.*+!_-]+(\s*,\s*(===|==|!=|~=|>=|<=|>|<)\s*[A-Za-z0-9.*+!_-]+)*)?$")


def _check_requirement(text: str) -> None:
    """A package name (with extras and versions), an existing path, or a URL pip understands."""
    if _REQUIREMENT.match(text.strip()) or Path(text).exists() or re.match(r"^(git\+)?(https?|file)://\S+$", text):
        return
    raise UsageError(f"'{text}' is not a package name, a path or a URL; write e.g. toolbox-mixup, "
                     "'toolbox-mixup>=0.2' or ./path/to/plugin")


def _check_installed(name: str) -> None:
    from importlib.metadata import PackageNotFoundError, distribution, entry_points

    if not re.fullmatch(_NAME, name):
        raise UsageError(f"'{name}' is not a package name; `toolbox plugins` lists the installed plugins")
    try:
        distribution(name)
    except PackageNotFoundError:
        dists = sorted({ep.dist.name for ep in entry_points(group="toolbox") if ep.dist})
        raise UsageError(f"'{name}' is not installed in toolbox's environment; installed plugin distributions: "
                         f"{', '.join(dists) or 'none'}") from None


def _pip(args) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    click.echo("$ " + " ".join(cmd), err=True)
    code = subprocess.call(cmd)
    if code:
        raise SystemExit(code)


@click.command()
@click.argument("packages", nargs=-1)
@click.option("-e", "--editable", "editables", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Install a local plugin folder in editable mode.")
@click.option("-U", "--upgrade", is_flag=True)
@click.option("--pre", is_flag=True, help="Allow pre-releases.")
@click.option("--no-deps", is_flag=True)
def install(packages, editables, upgrade, pre, no_deps):
    """Install plugins (PyPI names, paths or -e PATH) into toolbox's own environment."""
    if not packages and not editables:
        raise click.UsageError("name a package or -e PATH")
    for package in packages:
        _check_requirement(package)
    args = ["install"] + (["-U"] if upgrade else []) + (["--pre"] if pre else []) + (["--no-deps"] if no_deps else [])
    for e in editables:
        args += ["-e", e]
    _pip(args + list(packages))


@click.command()
@click.argument("packages", nargs=-1, required=True)
def uninstall(packages):
    """Uninstall plugins from toolbox's environment (works even when they are broken)."""
    for package in packages:
        _check_installed(package)
    _pip(["uninstall", "-y", *packages])
