"""install / uninstall: pip, run with the interpreter toolbox itself runs on (works under pipx and venvs).

Neither loads plugins, so a broken plugin can always be removed.
"""

from __future__ import annotations

import subprocess
import sys

import click


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
    args = ["install"] + (["-U"] if upgrade else []) + (["--pre"] if pre else []) + (["--no-deps"] if no_deps else [])
    for e in editables:
        args += ["-e", e]
    _pip(args + list(packages))


@click.command()
@click.argument("packages", nargs=-1, required=True)
def uninstall(packages):
    """Uninstall plugins from toolbox's environment (works even when they are broken)."""
    _pip(["uninstall", "-y", *packages])
