"""install / uninstall: pip, run with the interpreter toolbox itself runs on (works under pipx and venvs).

Neither loads plugins, so a broken plugin can always be removed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click

from .. import DISTRIBUTION, PLUGIN_PREFIX
from ..errors import UsageError

# a PEP 508 name with optional extras and version specifiers (no markers, no shell: pip gets each as one argument)
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REQUIREMENT = re.compile(rf"^{_NAME}(\[\s*{_NAME}(\s*,\s*{_NAME})*\s*\])?"
                          r"(\s*(===|==|!=|~=|>=|<=|>|<)\s*[A-Za-z0-9.*+!_-]+(\s*,\s*(===|==|!=|~=|>=|<=|>|<)\s*[A-Za-z0-9.*+!_-]+)*)?$")


def _check_requirement(text: str) -> None:
    """A package name (with extras and versions), an existing path, or a URL pip understands."""
    if _REQUIREMENT.match(text.strip()) or Path(text).exists() or re.match(r"^(git\+)?(https?|file)://\S+$", text):
        return
    raise UsageError(f"'{text}' is not a package name, a path or a URL; write e.g. toolbox-compression-mixup, "
                     "'toolbox-compression-mixup>=0.2' or ./path/to/plugin")


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


def _index_name(spec: str) -> str | None:
    """The project name of a requirement that pip would look up on the package index; None for a
    path, an archive or a URL (those name what they install). A bare word is a name even when a
    folder of that name exists here: pip looks it up on the index unless it holds a project."""
    if "://" in spec or " @ " in spec or spec.endswith((".whl", ".tar.gz", ".zip")) \
            or spec.startswith((".", "~")) or "/" in spec or "\\" in spec:
        return None
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
    return re.sub(r"[-_.]+", "-", match.group(0)).lower() if match else None


def check_plugin_names(packages, allow_any: bool) -> None:
    """Refuse index names outside the plugin naming convention: a name on the public index that is not
    ours installs whoever registered it (``toolbox`` itself there is an unrelated project)."""
    for spec in packages:
        name = _index_name(spec)
        if name is None or allow_any or name == DISTRIBUTION or name.startswith(PLUGIN_PREFIX):
            continue
        if name == "toolbox":
            raise UsageError(f"'toolbox' on the package index is an unrelated project; this toolbox is "
                             f"'{DISTRIBUTION}' (e.g. toolbox install '{DISTRIBUTION}[onnx]')")
        raise UsageError(f"'{spec}' is not a toolbox plugin name: plugins on the package index are named "
                         f"{PLUGIN_PREFIX}<name>; install a path or URL as it is, or pass --any-name if you "
                         f"trust the distribution '{name}'")


@click.command()
@click.argument("packages", nargs=-1)
@click.option("-e", "--editable", "editables", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Install a local plugin folder in editable mode.")
@click.option("-U", "--upgrade", is_flag=True)
@click.option("--pre", is_flag=True, help="Allow pre-releases.")
@click.option("--no-deps", is_flag=True)
@click.option("--any-name", is_flag=True, help=f"Allow index names outside the {PLUGIN_PREFIX}<name> convention.")
def install(packages, editables, upgrade, pre, no_deps, any_name):
    """Install plugins (index names, paths or -e PATH) into toolbox's own environment.

    Index names must follow the plugin naming convention (toolbox-compression-<name>), so a typo or
    a look-alike name cannot install an unrelated project.
    """
    if not packages and not editables:
        raise click.UsageError("name a package or -e PATH")
    for package in packages:
        _check_requirement(package)
    check_plugin_names(packages, any_name)
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
