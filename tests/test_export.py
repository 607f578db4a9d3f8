"""Export: ONNX (run with onnxruntime), torch.export and safetensors give the PyTorch model's outputs
and carry the input shape and normalisation."""

import json

import pytest
import torch
from click.testing import CliRunner

from toolbox import runs
from toolbox.artifacts import load_model
from toolbox.cli import cli


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    runs.execute("train", "supervised", None, ["model.arch=mlp", "epochs=2"], out=out, device="cpu")
    return out


def _export(run, fmt, path):
    result = CliRunner().invoke(cli, ["export", str(run), "--format", fmt, "-o", str(path)])
    assert result.exit_code == 0, result.output
    return path


def _inputs():
    return torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_onnx_runs_in_onnxruntime_with_the_same_outputs(mlp_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    path = _export(mlp_run, "onnx", tmp_path / "m.onnx")
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert meta["input_shape"] == [1, 8, 8] and len(meta["mean"]) == 1 and meta["architecture"] == "mlp"
    x = _inputs()
    expected = load_model(mlp_run).model(x).detach().numpy()
    got = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    assert got.shape == (5, 10) and abs(got - expected).max() < 1e-4


def test_torch_export_program_matches(mlp_run, tmp_path):
    path = _export(mlp_run, "torch-export", tmp_path / "m.pt2")
    program = torch.export.load(str(path))  # our own file, written just now
    x = _inputs()
    assert torch.allclose(program.module()(x), load_model(mlp_run).model(x), atol=1e-5)
    assert json.loads(path.with_suffix(".json").read_text())["std"] == json.loads((mlp_run / "config.json").read_text())["std"]


def test_plain_safetensors_carry_the_preprocessing(mlp_run, tmp_path):
    from safetensors import safe_open

    path = _export(mlp_run, "safetensors", tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
        assert set(f.keys()) == set(load_model(mlp_run).model.state_dict())
    assert meta["input_shape"] == [1, 8, 8] and meta["num_classes"] == 10
