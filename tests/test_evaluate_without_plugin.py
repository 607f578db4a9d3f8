"""`toolbox evaluate` of an artifact whose method no installed plugin provides: core evaluates a plain
classifier (accuracy, with a note saying why only that); anything else is one line naming the
distribution that made it."""

import json

import pytest
from click.testing import CliRunner

from toolbox import plugins
from toolbox.cli import cli


@pytest.fixture
def orphan(tmp_path):
    """A finished supervised run relabelled as made by the uninstalled 'ban' of toolbox-compression-ban."""
    plugins.reset()
    out = tmp_path / "ban-run"
    result = CliRunner().invoke(cli, ["train", "supervised", "--arch", "mlp", "--epochs", "3", "--threads", "1",
                                      "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("config.json", "run.json"):
        info = json.loads((out / name).read_text())
        info.update(method="ban", plugin="ban", distribution="toolbox-compression-ban")
        (out / name).write_text(json.dumps(info))
    return out


def test_a_plain_classifier_is_evaluated_by_core_when_its_plugin_is_missing(orphan):
    trained = json.loads((orphan / "config.json").read_text())["metrics"]["accuracy"]
    result = CliRunner().invoke(cli, ["evaluate", str(orphan), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["metrics"]["accuracy"] == pytest.approx(trained) and trained > 0.5
    assert "method 'ban' is not available here (install its distribution: pip install toolbox-compression-ban)" \
        in out["notes"]


def test_anything_else_is_one_line_naming_the_distribution(orphan):
    config = json.loads((orphan / "config.json").read_text())
    (orphan / "config.json").write_text(json.dumps({**config, "format": "toolbox-condensed"}))
    result = CliRunner().invoke(cli, ["evaluate", str(orphan), "--device", "cpu"])
    assert result.exit_code in (1, 2)
    assert result.stderr.splitlines() == [
        f"error: {orphan} was made by method 'ban', which is not available here; "
        "install its distribution: pip install toolbox-compression-ban"]
