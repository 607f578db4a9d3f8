"""Export a trained classifier: plain safetensors, ONNX (optional extra) or a torch.export program.

Each carries what a consumer needs besides the weights: the input shape and the normalisation
(safetensors metadata, ONNX metadata_props, a JSON file beside the .pt2). A .pt2 program is a zip
with pickled parts: it is for trusted, local use, and toolbox itself never loads one.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from . import DISTRIBUTION
from .artifacts import load_model, resolve_source
from .errors import UsageError
from .state import atomic_write, atomic_write_text

SUFFIX = {"safetensors": ".safetensors", "onnx": ".onnx", "torch-export": ".pt2"}
# files a run or model folder is made of: export never writes these names into one, even with --force
OWN_FILES = {"model.safetensors", "config.json", "run.json", "recipe.yaml", "summary.json", "metrics.jsonl",
             "synthetic.safetensors", "README.md", "val_split.json", ".lock"}


def _preprocessing(config: dict) -> dict:
    return {"architecture": config["architecture"], "num_classes": config["num_classes"],
            "input_shape": config["input_shape"], "mean": config["mean"], "std": config["std"],
            "dataset": config.get("dataset"), "input": "(x - mean) / std on images in [0, 1], NCHW"}


def planned_files(path: Path, fmt: str) -> list[Path]:
    """Every file an export to ``path`` writes: the model, and for safetensors and torch-export the JSON beside it."""
    side = [path.with_suffix(".json")] if fmt in ("safetensors", "torch-export") else []
    return [path, *side]


def _artifact_folder(folder: Path) -> bool:
    """A run directory (run.json) or a toolbox model / condensed-set folder (config.json of ours)."""
    if (folder / "run.json").is_file():
        return True
    try:
        return str(json.loads((folder / "config.json").read_text()).get("format", "")).startswith("toolbox-")
    except (OSError, ValueError, AttributeError):
        return False


def _owner(path: Path) -> Path | None:
    """The run or model folder whose own file ``path`` is (or would be), else None. Anything there
    except its export/ folder is the run's own: an existing file, one of its names, its checkpoint/."""
    path = path.resolve()
    for folder in path.parents:
        if not _artifact_folder(folder):
            continue
        inside = path.relative_to(folder).parts
        if inside[0] == "export":
            return None
        if path.exists() or inside[0] in OWN_FILES or inside[0] == "checkpoint":
            return folder
    return None


def check_targets(paths: list[Path], fmt: str, force: bool) -> None:
    """Refuse, before anything is written, an export that would replace a run's own file, or any
    existing file without ``force``."""
    for p in paths:
        owner = _owner(p)
        if owner is not None:
            raise UsageError(f"refusing to write {p}: it belongs to the run or model folder {owner} "
                             "(export never replaces those files, even with --force); "
                             f"choose a path outside it, or its export/ folder")
    if len(set(paths)) < len(paths):
        raise UsageError(f"-o {paths[0]} would be overwritten by the JSON file written beside it; "
                         f"end the name in {SUFFIX[fmt]}")
    for p in paths:
        if p.is_dir():
            raise UsageError(f"{p} is a folder; give -o a file name ending in its format's suffix")
        if p.exists() and not force:
            raise UsageError(f"{p} already exists; pass --force to replace it, or choose another -o")


def export_model(ref, fmt: str, output=None, force: bool = False) -> Path:
    import torch

    if fmt not in SUFFIX:
        raise UsageError(f"unknown export format '{fmt}'; valid: {', '.join(SUFFIX)}")
    source = resolve_source(ref)
    path = Path(output) if output else source.path / "export" / f"model{SUFFIX[fmt]}"
    check_targets(planned_files(path, fmt), fmt, force)
    loaded = load_model(source, device="cpu")
    model, config = loaded.model.eval(), loaded.config
    meta = _preprocessing(config)
    example = torch.zeros(2, *config["input_shape"])
    # every file goes through a temporary copy: a failed export never leaves half a file behind
    if fmt == "safetensors":
        from safetensors.torch import save_file

        tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={k: json.dumps(v) for k, v in meta.items()}))
        atomic_write_text(path.with_suffix(".json"), (source.path / "config.json").read_text())
    elif fmt == "onnx":
        try:
            import onnx
        except ImportError:
            raise UsageError(f"ONNX export needs the optional extra: pip install '{DISTRIBUTION}[onnx]'") from None

        def write_onnx(tmp):
            torch.onnx.export(model, (example,), tmp, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
            proto = onnx.load(tmp)
            for key, value in meta.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, json.dumps(value)
            onnx.save(proto, tmp)

        atomic_write(path, write_onnx)
    else:
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        buffer = io.BytesIO()  # torch.export.save names only *.pt2 files, not our temporary one
        torch.export.save(program, buffer)
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
        atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    return path
