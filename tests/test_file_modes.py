"""Files a run or a download writes get the mode any written file gets (0644 under umask 022), not
mkstemp's 0600: a run directory is meant to be shared, and nothing in it is a secret."""

import hashlib
import os
import stat

import pytest
from click.testing import CliRunner

from toolbox import plugins
from toolbox.cli import cli
from toolbox.data import download


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _modes(folder):
    return {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode)
            for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


def test_every_file_of_a_run_is_0644(tmp_path, umask_022):
    plugins.reset()
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "supervised", "--arch", "mlp", "--epochs", "2", "--threads", "1",
                                      "--device", "cpu", "-o", "checkpoint_every=1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    modes = _modes(out)
    assert {"run.json", "recipe.yaml", "model.safetensors", "config.json", "metrics.jsonl"} <= set(modes)
    assert any(name.endswith(".safetensors") and "state" in name for name in modes), modes  # a checkpoint
    assert {name: oct(m) for name, m in modes.items() if m != 0o644} == {}


def test_a_downloaded_file_is_0644(tmp_path, umask_022):
    source = tmp_path / "published.bin"
    source.write_bytes(b"published bytes")
    dest = tmp_path / "data" / "file.bin"
    dest.parent.mkdir()
    download.fetch(source.as_uri(), dest, hashlib.md5(source.read_bytes()).hexdigest())
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
