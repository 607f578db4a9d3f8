"""The distribution name: "toolbox" on the public package index is an unrelated project, so nothing
of ours may tell a user to install it, and `toolbox install` refuses index names outside the plugin
naming convention (a look-alike name would install a stranger's code)."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolbox import DISTRIBUTION, PLUGIN_PREFIX
from toolbox.cli import cli
from toolbox.cli.packages import _index_name

REPO = Path(__file__).resolve().parents[1]


def _project(path: Path) -> tuple[str, str]:
    """(name, dependencies line) of a pyproject.toml (tomllib is not in Python 3.10)."""
    text = path.read_text()
    return re.search(r'^name = "([^"]+)"', text, re.M).group(1), re.search(r"^dependencies = (.*)$", text, re.M).group(1)


def test_the_project_and_the_example_plugin_use_the_free_names():
    assert _project(REPO / "pyproject.toml")[0] == DISTRIBUTION != "toolbox"
    name, deps = _project(REPO / "examples" / "toolbox-compression-mixup" / "pyproject.toml")
    assert name.startswith(PLUGIN_PREFIX) and f'"{DISTRIBUTION}>=' in deps


def test_no_install_hint_names_the_strangers_distribution():
    # pip install toolbox / 'toolbox[extra]' / toolbox>=1 anywhere in code or docs would install the unrelated project
    bad = re.compile(r"""(pip|toolbox) install\s+(-\S+\s+)*['"]?toolbox(?![-\w/])""")
    hits = []
    for path in [REPO / "README.md", *REPO.glob("docs/**/*.md"), *REPO.glob("toolbox/**/*.py"),
                 *REPO.glob("plugins/**/*.py"), *REPO.glob("examples/**/*.md"), *REPO.glob("examples/**/*.py")]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            match = bad.search(line)
            if match and "never" not in line[:match.start()]:  # the warnings themselves name it
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("spec, name", [
    ("toolbox", "toolbox"), ("toolbox[onnx]", "toolbox"), ("Toolbox_Compression>=0.1", "toolbox-compression"),
    ("toolbox-compression-mixup==0.1.0", "toolbox-compression-mixup"), ("numpy", "numpy"),
    ("./examples/toolbox-compression-mixup", None), ("dist/x-0.1-py3-none-any.whl", None),
    ("git+https://example.org/x.git", None), ("pkg @ https://example.org/x.zip", None),
])
def test_index_names_are_told_from_paths_and_urls(spec, name):
    assert _index_name(spec) == name


@pytest.mark.parametrize("spec, expected", [
    ("toolbox", "error: 'toolbox' on the package index is an unrelated project; this toolbox is 'toolbox-compression'"),
    ("toolbox[onnx]", "error: 'toolbox' on the package index is an unrelated project"),
    ("mixup", "error: 'mixup' is not a toolbox plugin name: plugins on the package index are named "
              "toolbox-compression-<name>"),
])
def test_install_refuses_names_outside_the_convention_before_running_pip(spec, expected, tmp_path, monkeypatch):
    # a folder named like the package in the working directory must not make the name count as a path
    (tmp_path / "toolbox").mkdir()
    calls = []
    monkeypatch.setattr("toolbox.cli.packages._pip", calls.append)
    result = CliRunner().invoke(cli, ["install", spec])
    assert result.exit_code == 2 and calls == []
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr


def test_install_passes_conventional_names_paths_and_any_name_to_pip(monkeypatch, tmp_path):
    (tmp_path / "plugin-dir").mkdir()  # the test runs in tmp_path
    calls = []
    monkeypatch.setattr("toolbox.cli.packages._pip", calls.append)
    for args in (["toolbox-compression-mixup"], ["./plugin-dir"], ["--any-name", "mixup"], [f"{DISTRIBUTION}[onnx]"]):
        assert CliRunner().invoke(cli, ["install", *args]).exit_code == 0
    assert [c[-1] for c in calls] == ["toolbox-compression-mixup", "./plugin-dir", "mixup", f"{DISTRIBUTION}[onnx]"]
