"""A third-party plugin end to end, in a fresh virtual environment: `toolbox install` the plugin
docs/plugins.md's tutorial prints (its files written from the tutorial's blocks, exactly as printed:
the example in examples/toolbox-compression-mixup is the same), see it in `toolbox plugins` and
`toolbox recipes`, train and evaluate with it, `toolbox uninstall` it.

Offline by construction: pip reads no config file and no index, builds without isolation and installs
no dependencies, so a step that would need the network fails instead of downloading.
"""

import importlib.util
import json
import os
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the venv gets no `toolbox` script of its own (toolbox comes from the parent environment)
TOOLBOX = "import sys; from toolbox.cli import main; sys.argv[0] = 'toolbox'; main()"


@pytest.fixture
def venv(tmp_path):
    if importlib.util.find_spec("toolbox_mixup") is not None:
        pytest.skip("toolbox-compression-mixup is installed in this environment already; the test installs its own copy")
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env_dir)], check=True)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # --system-site-packages reaches the base interpreter, not the venv pytest runs in (.venv, .venv-ci):
    # make that one a site dir of the new venv, so torch, pip, setuptools and toolbox come from it, and
    # what gets installed lands in the new venv only
    Path(purelib, "_parent_env.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in site.getsitepackages()))
    env = {k: v for k, v in os.environ.items() if k not in ("TOOLBOX_LOAD_PLUGINS", "TOOLBOX_STRICT", "PYTHONPATH")}
    # PIP_NO_BUILD_ISOLATION=0 *disables* build isolation (pip's reading of --no-* flags from the environment)
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0",
               PIP_DISABLE_PIP_VERSION_CHECK="1", TOOLBOX_NO_PROGRESS="1")
    if subprocess.run([python, "-c", "import toolbox"], env=env).returncode:
        subprocess.run([python, "-m", "pip", "install", "--no-deps", "-e", str(REPO)], env=env, check=True)
    return python, env


def tutorial_package(folder: Path) -> Path:
    """The package the tutorial prints: each `<!-- file: PATH -->` block written to PATH, plus the two
    files its layout describes in words (README.md: any text; __init__.py: may be empty)."""
    text = (REPO / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"^<!-- file: (\S+) -->\n```\w*\n(.*?)^```$", text, flags=re.M | re.S)
    assert {"pyproject.toml", "toolbox_mixup/hooks.py", "toolbox_mixup/training.py"} <= {p for p, _ in blocks}
    for path, body in blocks:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(body)
    (folder / "README.md").write_text("mixup, from the tutorial\n")
    (folder / "toolbox_mixup" / "__init__.py").write_text("")
    return folder


def test_install_list_train_evaluate_and_uninstall_a_plugin(venv, tmp_path):
    python, env = venv

    def toolbox(*args, ok=True):
        result = subprocess.run([python, "-c", TOOLBOX, *args], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=180)
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    source = tutorial_package(tmp_path / "toolbox-compression-mixup")
    toolbox("install", "--no-deps", str(source))

    listed = {p["name"]: p for p in json.loads(toolbox("plugins", "--json").stdout)}
    assert listed["mixup"] == {"name": "mixup", "distribution": "toolbox-compression-mixup", "version": "0.1.0",
                               "hooks": ["evaluate", "register_methods", "register_recipes", "train"],
                               "methods": ["mixup"], "status": "loaded"}
    assert listed["supervised"]["status"] == "loaded"  # the built-ins load beside it

    recipes = json.loads(toolbox("recipes", "mixup/*", "--json").stdout)
    assert [(r["name"], r["method"], r["plugin"]) for r in recipes] == [("mixup/digits", "mixup", "mixup")]
    methods = {m["name"]: m for m in json.loads(toolbox("methods", "--json").stdout)}
    assert methods["mixup"]["default_recipe"] == "mixup/digits" and methods["mixup"]["options"]["--alpha"] == "alpha"

    toolbox("train", "mixup", "--epochs", "2", "--alpha", "0.4", "--threads", "1", "--device", "cpu", "--out", "run")
    run = tmp_path / "run"
    info = json.loads((run / "run.json").read_text())
    assert (info["status"], info["distribution"], info["plugin_version"]) == ("finished", "toolbox-compression-mixup", "0.1.0")
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert "alpha: 0.4" in (run / "recipe.yaml").read_text()
    report = json.loads(toolbox("evaluate", str(run), "--json", "--device", "cpu", "--threads", "1").stdout)
    assert report["method"] == "mixup" and report["alpha"] == 0.4
    assert report["metrics"]["accuracy"] > 0.8  # 10 classes: chance is 0.1

    toolbox("uninstall", "toolbox-compression-mixup")
    after = {p["name"] for p in json.loads(toolbox("plugins", "--json").stdout)}
    assert "mixup" not in after and "supervised" in after
    gone = toolbox("train", "mixup", ok=False)
    assert gone.returncode == 2 and gone.stderr.startswith("error: unknown method 'mixup'"), gone.stderr
