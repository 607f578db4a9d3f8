"""Dataset references: what a user may write wherever a dataset is named.

- a registered name (``digits``, ``cifar10``, ``tiny-imagenet``; see ``toolbox datasets``);
- a folder of class subfolders (``./my-photos``, ``~/data/birds``): anything with a path separator,
  starting with ``.`` or ``~``, or an existing folder that is not a registered name;
- a Hub dataset of parquet files: ``hf-hub:org/name[@revision]`` (``hf-hub:datasets/org/name`` too).

Options that change the decoded images travel inside the reference, so that a saved model or condensed
set names exactly the data it was made from: ``/abs/my-photos?image_size=32&channels=3``. Recipes set
them with ``data.image_size`` / ``data.channels`` (``toolbox.recipes.DataSource`` folds them in).

Standard library only: recipe validation imports this while plugins load.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import UsageError

HUB_PREFIX = "hf-hub:"
OPTIONS = ("image_size", "channels")
_HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def split_options(ref: str) -> tuple[str, dict[str, int]]:
    """'base?image_size=32' -> ('base', {'image_size': 32}); unknown or malformed options are UsageErrors."""
    base, sep, query = ref.partition("?")
    options: dict[str, int] = {}
    if sep:
        for part in filter(None, query.split("&")):
            key, _, value = part.partition("=")
            if key not in OPTIONS or not value.isdigit():
                raise UsageError(f"dataset reference '{ref}': '{part}' is not an option; "
                                 f"write {' or '.join(o + '=N' for o in OPTIONS)} after '?'")
            options[key] = int(value)
    return base, options


def join_options(base: str, options: dict) -> str:
    kept = [f"{k}={int(options[k])}" for k in OPTIONS if options.get(k) is not None]
    return base + ("?" + "&".join(kept) if kept else "")


def kind(ref: str, registered=()) -> str:
    """'name', 'folder' or 'hub' for a reference (without options)."""
    if ref.startswith(HUB_PREFIX):
        return "hub"
    if ref in registered:
        return "name"
    if os.sep in ref or "/" in ref or ref.startswith((".", "~")) or Path(ref).is_dir():
        return "folder"
    return "name"


def hub_repo(ref: str) -> tuple[str, str | None]:
    """'hf-hub:[datasets/]org/name[@rev]' -> (org/name, rev or None)."""
    text = ref.removeprefix(HUB_PREFIX).removeprefix("datasets/")
    repo, _, revision = text.partition("@")
    if not _HUB_REPO.match(repo):
        raise UsageError(f"'{ref}' is not a Hub dataset reference; write hf-hub:org/name or hf-hub:org/name@revision")
    return repo, revision or None


def canonical(ref: str, registered=(), **options) -> str:
    """The reference as recorded: folders absolute, options (given here or in ``ref``) sorted after '?'.
    Checks what can be checked without reading the data: the folder exists, the Hub name is well formed."""
    base, given = split_options(ref)
    merged = {**given, **{k: v for k, v in options.items() if v is not None}}
    what = kind(base, registered)
    if what == "name":
        if merged:
            raise UsageError(f"data.{next(iter(merged))} applies to image folders and Hub datasets; the built-in "
                             f"'{base}' has a fixed size (drop the option, or use a folder of its images)")
        return base
    if what == "hub":
        hub_repo(base)
        return join_options(base, merged)
    path = Path(base).expanduser()
    if not path.is_dir():
        names = ", ".join(sorted(registered))
        raise UsageError(f"dataset '{base}' is neither a registered dataset ({names}) nor a folder; give a folder of "
                         "class subfolders, hf-hub:org/name[@revision], or a name from `toolbox datasets`")
    return join_options(str(path.resolve()), merged)


def slug(ref: str) -> str:
    """A short, path-safe label for run-directory names: the folder's or repo's last part."""
    base, _ = split_options(ref)
    tail = base.removeprefix(HUB_PREFIX).split("@")[0].rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    return re.sub(r"[^\w.-]+", "_", tail) or "data"
