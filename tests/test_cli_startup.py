"""`toolbox --help`, `toolbox plugins` and `toolbox uninstall` never import torch, with every built-in
plugin and the example third-party plugin (examples/toolbox-compression-mixup) loaded. Each case runs in a fresh
interpreter, where nothing imported torch before. Speed is measured in benchmarks/cli_startup.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
from click.testing import CliRunner
from toolbox.cli import cli
result = CliRunner().invoke(cli, sys.argv[1:])
print(json.dumps({"exit_code": result.exit_code, "torch": "torch" in sys.modules, "output": result.output,
                  "plugins_loaded": "toolbox_supervised.hooks" in sys.modules}))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The environment with the example plugin made visible through a dist-info (not installed)."""
    site = tmp_path_factory.mktemp("site")
    info = site / "toolbox_mixup-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toolbox-compression-mixup\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[toolbox]\nmixup = toolbox_mixup.hooks\n")
    path = os.pathsep.join([str(site), str(REPO / "examples" / "toolbox-compression-mixup")])
    environ = {k: v for k, v in os.environ.items() if k not in ("TOOLBOX_LOAD_PLUGINS", "TOOLBOX_STRICT")}
    return {**environ, "PYTHONPATH": path, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}


def probe(env, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["plugins"], ["plugins", "--json"],
                                  ["methods", "--json"], ["recipes", "--json"]])
def test_command_does_not_import_torch(env, args):
    result = probe(env, *args)
    assert result["exit_code"] == 0, result["output"]
    assert not result["torch"], f"`toolbox {' '.join(args)}` imported torch"


@pytest.mark.parametrize("args, shown", [
    (["train", "zskt", "--help"], ["--teacher TEXT", "[teacher.source; now ''", "--student TEXT",
                                   "[student.arch; now 'wrn-16-1']", "--iterations INTEGER", "[iterations; now 300]"]),
    (["distill", "kd", "--shots", "5", "--help"], ["--loss [ce|kd|at|kd+at|fitnet|sp|", "|kd+mhgd|kd+iep]",
                                               "[data.shots; now 5]"]),
    (["condense", "cifar10", "--ipc", "10", "--help"], ["recipe, condense/cifar10-dc-ipc10]", "[ipc; now 10]"]),
    (["train", "mixup", "--help"], ["--alpha FLOAT", "[alpha; now 0.2]"]),  # a third-party plugin's options
])
def test_method_help_lists_its_options_with_type_key_and_value_without_torch(env, args, shown):
    result = probe(env, *args)
    assert result["exit_code"] == 0 and not result["torch"], result["output"]
    text = " ".join(result["output"].split())  # unwrapped
    missing = [s for s in shown if s not in text]
    assert not missing, result["output"]


def test_plugins_lists_the_example_plugin_without_torch(env):
    result = probe(env, "plugins", "--json")
    mixup = next(p for p in json.loads(result["output"]) if p["name"] == "mixup")
    assert mixup["status"] == "loaded" and mixup["methods"] == ["mixup"] and not result["torch"]


def test_uninstall_does_not_import_torch_or_load_plugins(env):
    # a name that is not installed is refused (pip would only warn), from package metadata alone
    result = probe(env, "uninstall", "toolbox-no-such-plugin-xyz")
    assert result["exit_code"] == 2 and not result["torch"] and not result["plugins_loaded"]
    assert "'toolbox-no-such-plugin-xyz' is not installed" in result["output"] and "toolbox-compression-mixup" in result["output"]
