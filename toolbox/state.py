"""Nested training state <-> one safetensors file, without pickle.

Tensors go into the safetensors body; everything else (dict/list/tuple structure, numbers,
strings, None) goes into a JSON skeleton stored in the file's metadata, with typed dict keys so an
optimizer's integer-keyed state comes back exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import CheckpointError

_META_KEY = "toolbox_state"


def _encode(obj: Any, tensors: dict, path: str):
    import torch

    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        # clone: safetensors refuses shared or non-contiguous storage
        tensors[name] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode_key(k, path), _encode(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and obj != obj:
            return {"__float__": "nan"}
        if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
            return {"__float__": "inf" if obj > 0 else "-inf"}
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at '{path}' in a checkpoint (tensors, numbers, strings, lists, dicts only)")


def _encode_key(key, path):
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"checkpoint dict key {key!r} at '{path}' must be str or int")
    return ["i", key] if isinstance(key, int) else ["s", key]


def _decode(obj: Any, tensors: dict):
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _decode(v, tensors) for (_, k), v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
    return obj


def plain_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file (0644 under the usual umask 022).

    mkstemp creates its files 0600, which suits secrets; nothing a run writes is one, so the file
    renamed into place gets the mode any other written file would have.
    """
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path``.

    A crash leaves either the old file or the new one, never a truncated mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, plain_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that atomic_write left in ``folder`` when its process was killed.

    Only safe while no other process writes ``folder`` (a run holds its directory's lock).
    """
    folder = Path(folder)
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_state(path: Path, state: dict) -> None:
    from safetensors.torch import save_file

    tensors: dict = {}
    skeleton = _encode(state, tensors, "state")
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={_META_KEY: json.dumps(skeleton)}))


class _NoTensors(dict):
    """The tensors of a state read for its plain values only: every tensor reads as None."""

    def __missing__(self, key):
        return None


def load_state(path: Path, tensors: bool = True) -> dict:
    """The state ``save_state`` wrote; ``tensors=False`` reads only the header (plain values such as a
    checkpoint's step, every tensor None) without reading the tensors' bytes."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            values = {k: f.get_tensor(k) for k in f.keys()} if tensors else _NoTensors()
        skeleton = json.loads(meta[_META_KEY])
    except Exception as e:  # safetensors raises several types for corrupt headers and bodies
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e}); "
                              "delete it to start over, or restore it from a copy") from None
    return _decode(skeleton, values)
