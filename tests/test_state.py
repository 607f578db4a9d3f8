"""Training state <-> safetensors without pickle: exact round trips of optimizer state_dicts (int
keys, tuples, tensors), RNG states and odd floats; corrupt or truncated files refused in one line."""

import math
import random
import re
from pathlib import Path

import pytest
import torch

from toolbox.errors import CheckpointError
from toolbox.state import load_state, save_state

REPO = Path(__file__).resolve().parents[1]


def trained_optimizer_state():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def assert_same(a, b, path="state"):
    if isinstance(a, dict):  # a state_dict's OrderedDict comes back as a dict, in the same order
        assert isinstance(b, dict), path
    else:
        assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


def test_optimizer_scheduler_model_and_rng_states_round_trip_exactly(tmp_path):
    model, opt, sched = trained_optimizer_state()
    gen = torch.Generator().manual_seed(7)
    torch.rand(3, generator=gen)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "gen": gen.get_state()},
             "odd": [float("nan"), float("inf"), -float("inf"), None, True, 3, "text", (1, (2.5, "x"))],
             "step": 12}
    assert isinstance(next(iter(state["optimizer"]["state"])), int)  # the case JSON alone gets wrong
    save_state(tmp_path / "state.safetensors", state)
    back = load_state(tmp_path / "state.safetensors")
    assert_same(state, back)

    # the restored optimizer continues exactly like the original
    model2, opt2, _ = trained_optimizer_state()
    model2.load_state_dict(back["model"])
    opt2.load_state_dict(back["optimizer"])
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (model2, opt2)):
        m(x).square().mean().backward()
        o.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), model2.parameters()))
    # and the restored generators continue the same stream
    gen2 = torch.Generator()
    gen2.set_state(back["rng"]["gen"])
    assert torch.equal(torch.rand(4, generator=gen), torch.rand(4, generator=gen2))
    version, internal, gauss = back["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))


def test_shared_and_non_contiguous_tensors_are_stored(tmp_path):
    base = torch.arange(12.0).view(3, 4)
    save_state(tmp_path / "s.safetensors", {"a": base, "b": base.t(), "c": base[1]})
    back = load_state(tmp_path / "s.safetensors")
    assert torch.equal(back["b"], base.t()) and torch.equal(back["c"], base[1])


def test_unstorable_values_are_refused_naming_the_path(tmp_path):
    with pytest.raises(TypeError, match=r"cannot store object at 'state.opt\[1\]'"):
        save_state(tmp_path / "s.safetensors", {"opt": [1, object()]})
    with pytest.raises(TypeError, match="must be str or int"):
        save_state(tmp_path / "s.safetensors", {(1, 2): 3})
    assert not (tmp_path / "s.safetensors").exists()  # nothing half-written


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "no-skeleton"])
def test_corrupt_checkpoint_is_one_line(tmp_path, damage):
    path = tmp_path / "state.safetensors"
    save_state(path, {"w": torch.randn(100, 100), "step": 3})
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\x13" + data[2:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(path))  # a valid safetensors file, but not a toolbox state
    with pytest.raises(CheckpointError) as err:
        load_state(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "corrupt or truncated" in message


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_state(tmp_path / "none.safetensors")


def test_no_pickle_anywhere():
    """Checkpoints, artifacts and downloads come from strangers: nothing may unpickle them."""
    calls = re.compile(r"\b(torch\.load|torch\.save|pickle\.loads?|pickle\.dumps?|cPickle|dill|joblib\.load|"
                       r"numpy\.load|np\.load|import pickle|from pickle)\b")
    offenders = []
    # the one exception: `toolbox import` of a published checkpoint the user names, read by torch's
    # weights-only unpickler (checked below)
    importer = REPO / "toolbox" / "checkpoint_import.py"
    for folder in ("toolbox", "plugins", "examples"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == importer:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if calls.search(code):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []
    loads = [line for line in importer.read_text().splitlines() if "torch.load(" in line.split("#", 1)[0]]
    assert loads and all("weights_only=True" in line for line in loads), loads
