"""Export a trained classifier: plain safetensors, ONNX (optional extra) or a torch.export program.

Each carries what a consumer needs besides the weights: the input shape and the normalisation
(safetensors metadata, ONNX metadata_props, a JSON file beside the .pt2). A .pt2 program is a zip
with pickled parts: it is for trusted, local use, and toolbox itself never loads one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from . import DISTRIBUTION
from .artifacts import load_model, resolve_source
from .errors import UsageError

SUFFIX = {"safetensors": ".safetensors", "onnx": ".onnx", "torch-export": ".pt2"}


def _preprocessing(config: dict) -> dict:
    return {"architecture": config["architecture"], "num_classes": config["num_classes"],
            "input_shape": config["input_shape"], "mean": config["mean"], "std": config["std"],
            "dataset": config.get("dataset"), "input": "(x - mean) / std on images in [0, 1], NCHW"}


def export_model(ref, fmt: str, output=None) -> Path:
    import torch

    if fmt not in SUFFIX:
        raise UsageError(f"unknown export format '{fmt}'; valid: {', '.join(SUFFIX)}")
    source = resolve_source(ref)
    loaded = load_model(source, device="cpu")
    model, config = loaded.model.eval(), loaded.config
    path = Path(output) if output else source.path / "export" / f"model{SUFFIX[fmt]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = _preprocessing(config)
    example = torch.zeros(2, *config["input_shape"])
    if fmt == "safetensors":
        from safetensors.torch import save_file

        tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in meta.items()})
        shutil.copyfile(source.path / "config.json", path.with_suffix(".json"))
    elif fmt == "onnx":
        try:
            import onnx
        except ImportError:
            raise UsageError(f"ONNX export needs the optional extra: pip install '{DISTRIBUTION}[onnx]'") from None
        torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        proto = onnx.load(str(path))
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        onnx.save(proto, str(path))
    else:
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return path
