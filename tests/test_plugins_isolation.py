"""A broken plugin is reported in one line naming it and its distribution, and everything else keeps
working; TOOLBOX_STRICT=1 turns the report into an error; two plugins claiming one name conflict.

Plugins here are throwaway modules with a real dist-info (entry point, name, version) on sys.path,
so they are found by the same entry-point scan as installed plugins.
"""

import importlib
import json
import sys
import textwrap
import traceback

import pytest
from click.testing import CliRunner

from toolbox import plugins
from toolbox.cli import cli
from toolbox.errors import UsageError

METHOD = '''
from toolbox.hookspecs import hookimpl
from toolbox.recipes import RecipeBase
from toolbox.registry import Method


class Recipe(RecipeBase):
    epochs: int = 1


@hookimpl
def register_methods(register):
    register(Method(name="{method}", verbs=("train",), summary="throwaway", schema=Recipe))
'''


@pytest.fixture
def install(tmp_path, monkeypatch):
    """install(entry_point_name, source, dist=...) writes a module and its dist-info; plugins reload.

    Only these plugins and `supervised` are loaded, so other installed plugins cannot disturb the
    counts (tests that select plugins themselves set TOOLBOX_LOAD_PLUGINS after installing).
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    loaded_before = set(sys.modules)
    names = ["supervised"]

    def _install(name, source, dist=None, version="0.3.0"):
        dist = dist or f"toolbox-{name}"
        module = f"tb_test_{name}"
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[toolbox]\n{name} = {module}\n")
        importlib.invalidate_caches()
        names.append(name)
        monkeypatch.setenv("TOOLBOX_LOAD_PLUGINS", ",".join(names))

    plugins.reset()
    yield _install
    plugins.reset()
    for name in set(sys.modules) - loaded_before:
        if name.startswith("tb_test_"):
            del sys.modules[name]


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def lines_naming(text, plugin):
    return [line for line in text.splitlines() if f"'{plugin}'" in line]


def test_plugin_that_fails_to_import_is_one_line_and_the_rest_works(install):
    install("crashy", "raise ImportError('needs libcrash, which is not installed')")
    result = invoke("plugins")
    assert result.exit_code == 0
    assert lines_naming(result.output, "crashy") == [
        "plugin 'crashy' (toolbox-crashy 0.3.0): failed to import tb_test_crashy: "
        "ImportError: needs libcrash, which is not installed"]
    listed = {p["name"]: p for p in json.loads(invoke("plugins", "--json").stdout)}
    assert listed["crashy"]["status"] == "failed" and listed["crashy"]["distribution"] == "toolbox-crashy"
    assert listed["supervised"]["status"] == "loaded"
    assert "supervised" in [m["name"] for m in json.loads(invoke("methods", "--json").stdout)]


def test_misspelled_hook_is_reported_with_the_known_hooks(install):
    install("typo", METHOD.format(method="typo") + "\n\n@hookimpl\ndef trian(recipe, run):\n    return {}\n")
    result = invoke("plugins")
    [line] = lines_naming(result.output, "typo")
    assert line.startswith("plugin 'typo' (toolbox-typo 0.3.0): unknown hook 'trian'")
    assert "known hooks:" in line and "train" in line
    # its method is not half-registered: the usage error says why it is missing
    train = invoke("train", "typo")
    assert train.exit_code == 2
    assert "unknown method 'typo'" in train.stderr and "note: plugin 'typo' (toolbox-typo 0.3.0)" in train.stderr


def test_register_hook_that_raises_leaves_the_plugin_out(install):
    install("badreg", """
        from toolbox.hookspecs import hookimpl

        @hookimpl
        def register_recipes(register):
            register(__import__("pathlib").Path(__file__).parent)

        @hookimpl
        def register_methods(register):
            raise ValueError("schema file missing")
    """)
    pm = plugins.load()
    assert [plugins.format_failure(f) for f in pm.failed] == [
        "plugin 'badreg' (toolbox-badreg 0.3.0): register_methods raised ValueError: schema file missing"]
    assert pm.plugin_info("badreg") is None
    assert all(p != "badreg" for p, _ in pm.registry.recipe_roots)  # what it registered before failing is gone
    assert invoke("train", "supervised", "--arch", "mlp", "--epochs", "1", "--threads", "1", "--device", "cpu",
                  "--out", "run").exit_code == 0


def test_train_hook_that_crashes_is_one_line_exit_1(install, tmp_path):
    install("boom", METHOD.format(method="boom") + """
@hookimpl
def train(recipe, run):
    raise ZeroDivisionError("division by zero in the loss")
""")
    result = invoke("train", "boom", "--device", "cpu", "--out", "run")
    assert result.exit_code == 1
    assert result.stderr == ("error: plugin 'boom' (toolbox-boom 0.3.0) crashed in train 'boom': "
                             "ZeroDivisionError: division by zero in the loss\n")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"


def test_strict_mode_raises_with_a_traceback(install, monkeypatch):
    install("crashy", "raise ImportError('needs libcrash')")
    install("badreg", "from toolbox.hookspecs import hookimpl\n\n@hookimpl\ndef register_methods(register):\n"
                      "    raise ValueError('schema file missing')\n")
    monkeypatch.setenv("TOOLBOX_LOAD_PLUGINS", "crashy")
    monkeypatch.setenv("TOOLBOX_STRICT", "1")
    result = invoke("methods")
    assert result.exit_code != 0
    text = "".join(traceback.format_exception(result.exception))
    assert "plugin 'crashy' (toolbox-crashy 0.3.0)" in str(result.exception) and "ImportError: needs libcrash" in text

    plugins.reset()
    monkeypatch.setenv("TOOLBOX_LOAD_PLUGINS", "badreg")
    result = invoke("methods")
    text = "".join(traceback.format_exception(result.exception))
    assert "plugin 'badreg' (toolbox-badreg 0.3.0)" in str(result.exception)
    assert "ValueError: schema file missing" in text and "tb_test_badreg.py" in text  # the plugin's own frame


def test_strict_mode_run_time_crash_keeps_the_plugins_traceback(install, monkeypatch, tmp_path):
    install("boom", METHOD.format(method="boom") + "\n@hookimpl\ndef train(recipe, run):\n    return 1 / 0\n")
    monkeypatch.setenv("TOOLBOX_STRICT", "1")
    result = invoke("train", "boom", "--device", "cpu", "--out", "run")
    assert isinstance(result.exception, ZeroDivisionError)
    assert "tb_test_boom.py" in "".join(traceback.format_exception(result.exception))


def test_two_plugins_registering_one_method_conflict(install):
    install("first", METHOD.format(method="dup"), dist="toolbox-first")
    install("second", METHOD.format(method="dup"), dist="toolbox-second")
    result = invoke("plugins")
    conflict = "method 'dup' is registered by two plugins, 'first' and 'second'"
    assert [line for line in result.output.splitlines() if "conflict" in line] == [
        f"conflict: {conflict}; uninstall one (toolbox uninstall ...) or select plugins with TOOLBOX_LOAD_PLUGINS"]
    assert "dup" not in [m["name"] for m in json.loads(invoke("methods", "--json").stdout)]
    with pytest.raises(UsageError, match=conflict):
        plugins.load().registry.method("dup")
    train = invoke("train", "dup")
    assert train.exit_code == 2 and conflict in train.stderr and "Traceback" not in train.output


def test_toolbox_load_plugins_selects_by_entry_point_name(install, monkeypatch):
    install("crashy", "raise ImportError('needs libcrash')")
    install("fine", METHOD.format(method="fine"))
    monkeypatch.setenv("TOOLBOX_LOAD_PLUGINS", "fine,supervised")
    pm = plugins.load()
    assert sorted(pm.registry.methods) == ["fine", "supervised"] and pm.failed == []
    plugins.reset()
    monkeypatch.setenv("TOOLBOX_LOAD_PLUGINS", "")
    pm = plugins.load()
    assert pm.registry.methods == {} and "digits" in pm.registry.datasets  # core's own registrations stay


def test_add_plugin_registers_a_throwaway_class(install, monkeypatch):
    monkeypatch.setenv("TOOLBOX_LOAD_PLUGINS", "supervised")

    class Toy:
        from toolbox.hookspecs import hookimpl

        @staticmethod
        @hookimpl
        def register_methods(register):
            from toolbox.recipes import RecipeBase
            from toolbox.registry import Method

            register(Method(name="toy", verbs=("train",), summary="toy", schema=RecipeBase))

        @staticmethod
        @hookimpl
        def train(run):
            run.log(1, accuracy=0.5)
            return {"accuracy": 0.5}

    pm = plugins.load()
    pm.add_plugin("toy", Toy, dist="toy-dist", version="1.0")
    assert pm.plugin_info("toy").methods == ["toy"] and pm.plugin_info("toy").hooks == ["register_methods", "train"]
    result = invoke("train", "toy", "--device", "cpu", "--out", "run")
    assert result.exit_code == 0, result.output
    pm.add_plugin("toy", Toy)
    assert "already loaded" in plugins.format_failure(pm.failed[-1])


def test_core_recipes_come_first_and_a_plugin_cannot_shadow_them(install, tmp_path):
    shadow = tmp_path / "site" / "shadow_recipes" / "supervised"
    shadow.mkdir(parents=True)
    (shadow / "digits.yaml").write_text("method: supervised\nepochs: 1\n")
    install("shadow", "from pathlib import Path\nfrom toolbox.hookspecs import hookimpl\n\n@hookimpl\n"
                      "def register_recipes(register):\n    register(Path(__file__).parent / 'shadow_recipes')\n")
    from toolbox.recipes import find_recipe, recipe_roots

    assert [plugin for plugin, _ in recipe_roots()] == ["toolbox", "shadow"]
    assert "epochs: 30" in find_recipe("supervised/digits").read_text()
