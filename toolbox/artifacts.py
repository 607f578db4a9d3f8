"""Model and condensed-set artifacts on disk: safetensors + config.json (+ README.md card).

Loading rebuilds the model through the registry from config.json and loads strictly; nothing is
ever unpickled. Every failure is one line naming the file and the problem.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import CheckpointError, UsageError
from .state import atomic_write, atomic_write_text

MODEL_FORMAT = "toolbox-model"
CONDENSED_FORMAT = "toolbox-condensed"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@dataclass
class Source:
    """Where an artifact came from: a local folder, or a Hub repo at an exact commit."""

    path: Path
    ref: str
    repo: str | None = None
    revision: str | None = None
    commit: str | None = None
    repo_type: str = "model"

    def describe(self) -> dict:
        return {k: v for k, v in {"ref": self.ref, "repo": self.repo, "revision": self.revision,
                                  "commit": self.commit, "path": str(self.path)}.items() if v}


@dataclass
class Loaded:
    model: Any
    config: dict
    source: Source
    mean: tuple = field(default=())
    std: tuple = field(default=())


@dataclass
class Synthetic:
    images: Any
    labels: Any
    config: dict
    source: Source


def resolve_source(ref: str | Path, repo_type: str = "model") -> Source:
    ref = str(ref)
    if ref.startswith("hf-hub:"):
        from .hub import resolve_hub_ref

        return resolve_hub_ref(ref, repo_type=repo_type)
    path = Path(ref)
    if not path.exists():
        raise UsageError(f"{ref} does not exist; pass a run directory, a folder with config.json, or hf-hub:org/name[@rev]")
    if path.is_file():
        path = path.parent
    return Source(path=path, ref=ref)


def read_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        pickles = [p.name for p in Path(folder).glob("*") if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise CheckpointError(f"{folder} holds only pickled weights ({', '.join(sorted(pickles))}); toolbox never "
                                  "unpickles files (they can run code): convert them to model.safetensors + config.json")
        raise CheckpointError(f"{folder} has no config.json: it is not a toolbox artifact (a finished run, or a pull of one)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the artifact is corrupt, re-create or re-download it") from None
    if not isinstance(config, dict) or "format" not in config:
        raise CheckpointError(f"{path} is not a toolbox config (no 'format' key)")
    check_config(config, path)
    return config


@functools.cache
def _config_schema():
    """What loading an artifact relies on, with bounds: a config.json from a stranger must not make
    toolbox allocate a terabyte (num_classes 10**12), build negative shapes or read files outside
    its folder (weights "../../x")."""
    from typing import Annotated, Literal

    from pydantic import BaseModel, ConfigDict, Field, StringConstraints

    from .recipes import Float, Int

    FileName = Annotated[str, StringConstraints(pattern=r"^[\w.-]+\.safetensors$")]

    class ArtifactConfig(BaseModel):
        model_config = ConfigDict(extra="allow", protected_namespaces=())
        format: Literal["toolbox-model", "toolbox-condensed"]
        weights: FileName | None = None
        num_classes: Int(1, 100_000)
        input_shape: Annotated[list[Int(1, 65_536)], Field(min_length=3, max_length=3)]
        mean: list[Float(ge=-1e6, le=1e6)]
        std: list[Float(gt=0, le=1e6)]
        dataset: str | None = None
        method: str | None = None
        architecture: str | None = None
        arch_kwargs: dict = {}
        ipc: Int(1, 100_000) | None = None
        metrics: dict = {}

    return ArtifactConfig


def check_config(config: dict, path) -> None:
    from pydantic import ValidationError

    from .recipes import describe_range, numeric_bounds

    schema = _config_schema()
    try:
        schema.model_validate(config)
    except ValidationError as e:
        first = e.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "?"
        field = schema.model_fields.get(key)
        numbers = numeric_bounds(field.annotation, field.metadata) if field is not None else []
        if first["type"] == "missing":
            raise CheckpointError(f"{path} lacks '{key}'; the artifact is corrupt or not toolbox's, "
                                  "re-create or re-download it") from None
        if key == "weights":
            what = "must be a .safetensors file name inside the artifact's folder"
        elif numbers and first["type"] not in ("too_short", "too_long", "list_type"):
            each = "each element " if len(first["loc"]) > 1 and isinstance(first["loc"][1], int) else ""
            what = f"{each}must be {describe_range(*numbers[0])}"
        else:
            what = first["msg"].removeprefix("Value error, ").lower()
        got = f" (got {config.get(key)!r:.60})"
        raise CheckpointError(f"{path}: '{key}' {what}{got}; the artifact is corrupt or not toolbox's, "
                              "re-create or re-download it") from None
    if config["format"] == MODEL_FORMAT and not isinstance(config.get("architecture"), str):
        raise CheckpointError(f"{path} lacks 'architecture'; the artifact is corrupt or not a toolbox model")
    channels = config["input_shape"][0]
    if len(config["mean"]) != channels or len(config["std"]) != channels:
        raise CheckpointError(f"{path}: 'mean' and 'std' need one value per input channel ({channels}); "
                              "the artifact is corrupt, re-create or re-download it")


def check_model_ref(ref: str, key: str) -> None:
    """For recipe validation: a local model reference (a teacher) must be a model artifact, so a typo
    is refused before a run directory exists; a Hub reference is checked when it is downloaded."""
    if not ref or ref.startswith("hf-hub:"):
        return
    try:
        config = read_config(resolve_source(ref).path)
    except UsageError as e:
        raise UsageError(f"{key}: {e}") from None
    if config.get("format") != MODEL_FORMAT:
        raise UsageError(f"{key}: {ref} is a {config.get('format')} artifact, not a model; pass a run that trained one")


def read_run_json(folder) -> dict:
    """A run's run.json (its method, verb and status), checked: resuming from a garbage file must say so."""
    path = Path(folder) / "run.json"
    if not path.is_file():
        raise UsageError(f"{folder} is not a run directory (no run.json); pass the folder a run wrote")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the run's record is corrupt, start the run again") from None
    if not isinstance(info, dict) or not all(isinstance(info.get(k), str) for k in ("method", "verb")):
        raise CheckpointError(f"{path} is not a toolbox run record (it needs 'method' and 'verb'); "
                              "pass the folder a toolbox run wrote")
    return info


def _image_size(shape) -> int:
    return int(shape[-1])


def save_model(folder: Path, model, *, arch: str, arch_kwargs: dict, dataset, method: str,
               metrics: dict | None = None, extra: dict | None = None, prefix: str = "model",
               provenance: dict | None = None) -> Path:
    """Write ``{prefix}.safetensors`` + ``{prefix}.config.json``-style config (config.json for the main model)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    weights = folder / f"{prefix}.safetensors"
    atomic_write(weights, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    config = {
        "format": MODEL_FORMAT, "format_version": 1, "weights": weights.name,
        "architecture": arch, "arch_kwargs": arch_kwargs or {},
        "num_classes": dataset.num_classes, "input_shape": list(dataset.shape),
        "mean": list(dataset.mean), "std": list(dataset.std), "dataset": dataset.name,
        "method": method, "toolbox_version": __version__, **(provenance or {}),
        "metrics": metrics or {}, **(extra or {}),
    }
    name = "config.json" if prefix == "model" else f"{prefix}.config.json"
    atomic_write_text(folder / name, json.dumps(config, indent=2))
    if prefix == "model":
        write_card_if_absent(folder, config)
    return weights


def write_card_if_absent(folder: Path, config: dict) -> None:
    """A short README.md card; one the user already wrote is never overwritten."""
    card = Path(folder) / "README.md"
    if card.exists():
        return
    metrics = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                        for k, v in (config.get("metrics") or {}).items())
    what = "condensed dataset" if config["format"] == CONDENSED_FORMAT else f"`{config.get('architecture')}` model"
    text = (f"# {config.get('method')} on {config.get('dataset')}\n\n"
            f"A {what} produced by `toolbox` ({config.get('method')}).\n\n"
            f"- dataset: {config.get('dataset')}\n- input shape: {config.get('input_shape')}\n"
            f"- normalisation: mean {config.get('mean')}, std {config.get('std')}\n\n"
            + (f"| metric | value |\n|---|---|\n{metrics}\n" if metrics else ""))
    atomic_write_text(card, text)


def _read_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the artifact is incomplete")
    try:
        return load_file(str(path))
    except Exception as e:  # corrupt header, truncated body, wrong file type
        raise CheckpointError(f"{path} is corrupt or truncated ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                              "re-create or re-download it") from None


def load_model(ref, device="cpu", prefix: str = "model") -> Loaded:
    from .registry import current

    source = ref if isinstance(ref, Source) else resolve_source(ref)
    config = read_config(source.path) if prefix == "model" else _read_json(source.path / f"{prefix}.config.json")
    if config.get("format") != MODEL_FORMAT:
        raise UsageError(f"{source.ref} is a {config.get('format')} artifact, not a model")
    for key in ("architecture", "num_classes", "input_shape"):
        if key not in config:
            raise CheckpointError(f"{source.path}/config.json lacks '{key}'; the artifact is corrupt or not a toolbox model")
    try:
        arch = current().architecture(config["architecture"])
    except UsageError as e:
        raise CheckpointError(f"{source.ref}: config.json names an architecture no installed plugin provides ({e})") from None
    shape = config["input_shape"]
    model = arch(num_classes=config["num_classes"], in_channels=shape[0], image_size=_image_size(shape),
                 **config.get("arch_kwargs", {}))
    tensors = _read_safetensors(source.path / config.get("weights", f"{prefix}.safetensors"))
    _load_strict(model, tensors, source, config["architecture"])
    model.to(device).eval()
    return Loaded(model=model, config=config, source=source, mean=tuple(config["mean"]), std=tuple(config["std"]))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


def _load_strict(model, tensors: dict, source: Source, arch: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
        raise CheckpointError(f"{source.ref}: weights do not match architecture '{arch}' ({'; '.join(parts)})")
    for k, v in own.items():
        if tuple(v.shape) != tuple(tensors[k].shape):
            raise CheckpointError(f"{source.ref}: weight '{k}' has shape {list(tensors[k].shape)} but '{arch}' "
                                  f"expects {list(v.shape)}; config.json and model.safetensors do not match")
    model.load_state_dict(tensors, strict=True)


def save_synthetic(folder: Path, images, labels, *, dataset, method: str, ipc: int, extra: dict | None = None,
                   metrics: dict | None = None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    path = folder / "synthetic.safetensors"
    tensors = {"images": images.detach().to("cpu").float().contiguous().clone(),
               "labels": labels.detach().to("cpu").long().contiguous().clone()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    config = {
        "format": CONDENSED_FORMAT, "format_version": 1, "weights": path.name, "method": method,
        "dataset": dataset.name, "ipc": int(ipc), "num_classes": dataset.num_classes,
        "input_shape": list(dataset.shape), "mean": list(dataset.mean), "std": list(dataset.std),
        "toolbox_version": __version__, "metrics": metrics or {}, **(extra or {}),
    }
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2))
    return path


def load_synthetic(ref) -> Synthetic:
    source = ref if isinstance(ref, Source) else resolve_source(ref, repo_type="dataset")
    config = read_config(source.path)
    if config.get("format") != CONDENSED_FORMAT:
        raise UsageError(f"{source.ref} is not a condensed dataset (its config.json format is '{config.get('format')}')")
    tensors = _read_safetensors(source.path / config.get("weights", "synthetic.safetensors"))
    if set(tensors) != {"images", "labels"} or tensors["images"].shape[0] != tensors["labels"].shape[0]:
        raise CheckpointError(f"{source.ref}: synthetic.safetensors must hold 'images' and 'labels' of equal length")
    if list(tensors["images"].shape[1:]) != list(config["input_shape"]):
        raise CheckpointError(f"{source.ref}: images have shape {list(tensors['images'].shape[1:])} but config.json says {config['input_shape']}")
    return Synthetic(images=tensors["images"], labels=tensors["labels"], config=config, source=source)
