"""toolbox import: a checkpoint in a reference repository's layout (RepDistiller / xternalz WRN names,
a DataParallel prefix, a {"model": ...} holder) becomes a model folder that evaluates to the accuracy
of the network it came from; a pickle that runs code is never executed; bad files are one line each."""

import hashlib
import json
import os
import re

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from toolbox import plugins, runs
from toolbox.cli import cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A WRN-16-1 trained one epoch on digits, and the test accuracy toolbox measured for it."""
    plugins.reset()
    run, metrics = runs.execute("train", "supervised", None, ["model.arch=wrn-16-1", "epochs=1"],
                                out=tmp_path_factory.mktemp("imp") / "wrn", device="cpu")
    return run, metrics["accuracy"]


def repdistiller_names(state: dict) -> dict:
    """Our WRN's keys as RepDistiller's models/wrn.py names them (xternalz/WideResNet-pytorch's modules:
    self.block1 = NetworkBlock(...) holding self.layer, BasicBlock.convShortcut, the final self.bn1)."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"^group(\d)\.(\d+)\.", r"block\1.layer.\2.", k)
        k = k.replace(".shortcut.", ".convShortcut.")
        out[re.sub(r"^bn\.", "bn1.", k)] = v
    return out


def invoke(*args):
    return CliRunner().invoke(cli, ["import", *map(str, args)])


@pytest.mark.parametrize("wrapped", ["model", "state_dict+module", "bare"])
def test_a_reference_layout_checkpoint_imports_and_evaluates_to_the_same_accuracy(trained, tmp_path, wrapped):
    run, accuracy = trained
    state = repdistiller_names(load_file(str(run / "model.safetensors")))
    if wrapped == "model":  # RepDistiller's save_dict: {'epoch', 'model', 'accuracy', 'optimizer'}
        saved = {"epoch": 240, "model": state, "accuracy": 73.5, "optimizer": {"state": {}, "param_groups": []}}
    elif wrapped == "state_dict+module":  # a DataParallel model saved as it was
        saved = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    else:
        saved = state
    ckpt = tmp_path / "ckpt_epoch_240.pth"
    torch.save(saved, ckpt)
    result = invoke(ckpt, "--arch", "wrn-16-1", "--dataset", "digits", "--out", tmp_path / "t")
    assert result.exit_code == 0, result.output
    assert "repdistiller-wrn layout" in result.stdout
    ours, original = load_file(str(tmp_path / "t" / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert ours.keys() == original.keys() and all(torch.equal(ours[k], original[k]) for k in ours)
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["imported_from"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert config["imported_from"]["layout"] == "repdistiller-wrn" and config["architecture"] == "wrn-16-1"
    evaluated = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "t"), "--json", "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)


class _RunsCode:
    """What a malicious checkpoint holds: unpickling it would call os.mkdir."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_pickle_that_runs_code_is_refused_without_running_it(trained, tmp_path):
    run, _ = trained
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pth"
    torch.save({"model": load_file(str(run / "model.safetensors")), "payload": _RunsCode(marker)}, ckpt)
    result = invoke(ckpt, "--arch", "wrn-16-1", "--dataset", "digits", "--out", tmp_path / "t")
    assert result.exit_code == 2
    assert not marker.exists() and not (tmp_path / "t").exists()
    line = result.stderr.strip()
    assert line.startswith(f"error: {ckpt} holds more than tensors and plain containers (") and "\n" not in line
    assert "GLOBAL posix.mkdir" in line and "weights_only` set to `False`" not in line
    assert line.endswith("save the state dict alone (torch.save(model.state_dict(), ...)) and import that")


def _bad(tmp_path, run, kind):
    state = repdistiller_names(load_file(str(run / "model.safetensors")))
    path = tmp_path / f"{kind}.pth"
    if kind == "missing":
        del state["fc.bias"]
        torch.save({"model": state}, path)
    elif kind == "not-tensors":
        torch.save({"model": {**state, "fc.extra": [1, 2, 3]}}, path)
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    else:
        torch.save({"model": state}, path)
    return path


@pytest.mark.parametrize("kind, dataset, expected", [
    ("missing", "digits", "error: the checkpoint's keys do not match the architecture (closest layout "
                            "'repdistiller-wrn': missing fc.bias); check --arch, or the checkpoint's repository is "
                            "not one of toolbox, repdistiller-wrn"),
    ("good", "cifar100", "error: conv1.weight is [16, 1, 3, 3] in the checkpoint but [16, 3, 3, 3] in the architecture"),
    ("not-tensors", "digits", "error: the state dict in its 'model' entry of {path} holds non-tensor entries "
                                "(fc.extra); toolbox import accepts tensors only"),
    ("garbage", "digits", "error: {path} is not a PyTorch checkpoint torch.load can read (Unsupported operand"),
])
def test_bad_checkpoints_are_one_line(trained, tmp_path, kind, dataset, expected):
    run, _ = trained
    path = _bad(tmp_path, run, kind)
    result = invoke(path, "--arch", "wrn-16-1", "--dataset", dataset, "--out", tmp_path / "t")
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and not (tmp_path / "t").exists()
    assert line.startswith(expected.format(path=path)), line
