"""Model artifacts: model.safetensors + config.json round trip through the registry; corrupt,
truncated, pickled-only or mismatched artifacts are refused with one CheckpointError line."""

import json

import pytest
import torch

from toolbox import artifacts, data
from toolbox.errors import CheckpointError
from toolbox.registry import current


@pytest.fixture
def saved(tmp_path):
    digits = data.load("digits")
    torch.manual_seed(0)
    model = current().architecture("mlp")(num_classes=10, in_channels=1, image_size=8)
    artifacts.save_model(tmp_path / "m", model, arch="mlp", arch_kwargs={}, dataset=digits.spec, method="supervised",
                         metrics={"accuracy": 0.5})
    return tmp_path / "m", model


def refused(folder) -> str:
    with pytest.raises(CheckpointError) as err:
        artifacts.load_model(folder)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_round_trip_rebuilds_the_same_model(saved):
    folder, model = saved
    loaded = artifacts.load_model(folder)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(loaded.model(x), model.eval()(x))
    assert loaded.config["architecture"] == "mlp" and loaded.config["num_classes"] == 10
    assert (folder / "README.md").read_text().startswith("# supervised on digits")


@pytest.mark.parametrize("cut", [0, 7, 100, -10])
def test_truncated_weights_are_refused(saved, cut):
    folder, _ = saved
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:cut])
    assert f"{weights} is corrupt or truncated" in refused(folder)


def test_corrupt_or_incomplete_config_is_refused(saved):
    folder, _ = saved
    config = folder / "config.json"
    good = config.read_text()
    config.write_text(good[: len(good) // 2])
    assert "is not valid JSON" in refused(folder)
    config.write_text(json.dumps({"weights": "model.safetensors"}))
    assert "not a toolbox config (no 'format' key)" in refused(folder)
    config.write_text(json.dumps({k: v for k, v in json.loads(good).items() if k != "num_classes"}))
    assert "lacks 'num_classes'" in refused(folder)
    config.unlink()
    assert "has no config.json" in refused(folder)


def test_missing_weights_are_refused(saved):
    folder, _ = saved
    (folder / "model.safetensors").unlink()
    assert "model.safetensors is missing" in refused(folder)


def test_mismatched_architecture_is_one_line(saved):
    folder, _ = saved
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architecture": "wrn-16-1"}))
    message = refused(folder)
    assert "weights do not match architecture 'wrn-16-1'" in message and "missing" in message
    (folder / "config.json").write_text(json.dumps({**config, "architecture": "no-such-net"}))
    assert "names an architecture no installed plugin provides" in refused(folder)


def test_mismatched_shape_is_one_line(saved):
    folder, _ = saved
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_classes": 7}))
    message = refused(folder)
    assert "has shape [10" in message and "expects [7" in message


def test_pickled_weights_are_never_opened(tmp_path):
    folder = tmp_path / "downloaded"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    assert "toolbox never unpickles files" in refused(folder)
