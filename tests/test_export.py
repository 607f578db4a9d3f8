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


# --- export never loses data ------------------------------------------------------------------------


def _tree(*roots):
    """Every path under ``roots`` with its content hash (None for folders)."""
    import hashlib

    return {str(p): None if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots for p in sorted(root.rglob("*"))}


def _refused(*args):
    result = CliRunner().invoke(cli, ["export", *map(str, args)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def other_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export-other") / "run"
    runs.execute("train", "supervised", None, ["model.arch=mlp", "epochs=1"], out=out, device="cpu")
    return out


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_torch_export_side_json_never_replaces_a_runs_config(mlp_run, other_run, tmp_path, force):
    """The issue's case: -o RUN/config.pt2 wrote its preprocessing JSON over RUN/config.json."""
    before = _tree(mlp_run, other_run, tmp_path)
    for run in (mlp_run, other_run):
        line = _refused(mlp_run, "--format", "torch-export", "-o", run / "config.pt2", *force)
        assert line == (f"error: refusing to write {run / 'config.json'}: it belongs to the run or model folder "
                        f"{run.resolve()} (export never replaces those files, even with --force); choose a path "
                        "outside it, or its export/ folder")
    assert _tree(mlp_run, other_run, tmp_path) == before


@pytest.mark.parametrize("name", ["model.safetensors", "run.json", "metrics.jsonl", "README.md",
                                  "checkpoint/state.safetensors", "summary.json"])
def test_export_never_writes_over_another_runs_files(mlp_run, other_run, tmp_path, name):
    """The issue's other case: -o otherrun/model.safetensors replaced another run's model."""
    before = _tree(mlp_run, other_run, tmp_path)
    line = _refused(mlp_run, "-o", other_run / name, "--force")
    assert line.startswith(f"error: refusing to write {other_run / name}: it belongs to the run or model folder ")
    assert _tree(mlp_run, other_run, tmp_path) == before


def test_an_existing_target_needs_force(mlp_run, other_run, tmp_path):
    target = tmp_path / "out" / "m.pt2"
    target.parent.mkdir()
    target.write_bytes(b"someone's file")
    before = _tree(mlp_run, other_run, tmp_path)
    line = _refused(mlp_run, "--format", "torch-export", "-o", target)
    assert line == f"error: {target} already exists; pass --force to replace it, or choose another -o"
    assert _tree(mlp_run, other_run, tmp_path) == before
    # the side file is checked before anything is written, too
    target.unlink()
    target.with_suffix(".json").write_text("{}")
    assert _refused(mlp_run, "--format", "torch-export", "-o", target) == \
        f"error: {target.with_suffix('.json')} already exists; pass --force to replace it, or choose another -o"
    assert not target.exists()
    forced = CliRunner().invoke(cli, ["export", str(mlp_run), "--format", "torch-export", "-o", str(target),
                                              "--force"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(target.with_suffix(".json").read_text())["architecture"] == "mlp"
    assert torch.export.load(str(target)).module()(_inputs()).shape == (5, 10)
    # a name whose side file would be itself is refused
    assert _refused(mlp_run, "-o", tmp_path / "m.json") == \
        f"error: -o {tmp_path / 'm.json'} would be overwritten by the JSON file written beside it; end the name in .safetensors"
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


def test_default_export_goes_to_the_runs_export_folder_and_is_not_replaced_silently(other_run):
    first = CliRunner().invoke(cli, ["export", str(other_run)])
    assert first.exit_code == 0, first.output
    path = other_run / "export" / "model.safetensors"
    assert first.stdout.strip() == str(path) and path.with_suffix(".json").exists()
    assert _refused(other_run) == f"error: {path} already exists; pass --force to replace it, or choose another -o"
    again = CliRunner().invoke(cli, ["export", str(other_run), "--force"])
    assert again.exit_code == 0, again.output


def test_a_model_folder_without_run_json_is_protected_too(mlp_run, tmp_path):
    """A pulled model is config.json + model.safetensors: its files are its own as well."""
    import shutil

    pulled = tmp_path / "pulled"
    pulled.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(mlp_run / name, pulled / name)
    before = _tree(tmp_path)
    assert _refused(pulled, "-o", pulled / "config.safetensors", "--force").startswith(
        f"error: refusing to write {pulled / 'config.json'}: it belongs to the run or model folder ")
    assert _tree(tmp_path) == before
    # a new file beside them is not theirs
    result = CliRunner().invoke(cli, ["export", str(pulled), "--format", "torch-export", "-o", str(pulled / "m.pt2")])
    assert result.exit_code == 0, result.output
