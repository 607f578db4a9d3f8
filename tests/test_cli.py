"""The command line: bad usage is exit 2 with one `error:` line (a traceback only with --debug),
overrides are typed, the listing verbs' --json shapes, and `evaluate --json`."""

import json

import pytest
import yaml
from click.testing import CliRunner

from toolbox import plugins
from toolbox.cli import cli
from toolbox.errors import UsageError

MLP = ["train", "supervised", "--arch", "mlp", "--threads", "1", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def one_line_usage_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["train", "supervisd"], "error: unknown method 'supervisd' (did you mean 'supervised'?); valid: "),
    (MLP + ["--epochs", "1", "--dataset", "digitz"], "error: unknown dataset 'digitz' (did you mean 'digits'?)"),
    (["train", "supervised", "--arch", "wrn-16-9", "--epochs", "1", "--device", "cpu"],
     "error: unknown architecture 'wrn-16-9' (did you mean "),
    (MLP + ["-r", "supervised/digitz"], "error: recipe 'supervised/digitz' is neither a file nor a known recipe; "
                                        "did you mean supervised/digits"),
    (["train", "supervised", "--device", "tpu"], "error: unknown device 'tpu'; use auto, cpu, cuda or cuda:N"),
    (["train", "supervised", "--epochz", "3"], "error: no such option '--epochz' for this method; method options: "),
    (["condense", "digits", "--method", "supervised"], "error: method 'supervised' does not support 'condense'"),
])
def test_bad_usage_is_exit_2_and_one_line(args, expected):
    assert one_line_usage_error(invoke(*args)).startswith(expected)


def test_unknown_recipe_key_names_it_and_lists_the_valid_ones():
    line = one_line_usage_error(invoke(*MLP, "-o", "optim.lrr=0.1"))
    assert line.startswith("error: unknown recipe key 'optim.lrr' in recipe supervised/")
    assert "(did you mean 'optim.lr'?); valid keys under 'optim': lr, momentum, weight_decay, nesterov" in line
    line = one_line_usage_error(invoke(*MLP, "-o", "epochz=1"))
    assert "unknown recipe key 'epochz'" in line and "valid keys: " in line and "epochs" in line


def test_wrong_type_names_the_key():
    line = one_line_usage_error(invoke(*MLP, "-o", "epochs=many"))
    assert "recipe key 'epochs'" in line and "'many'" in line


def test_debug_shows_the_traceback():
    result = invoke("--debug", "train", "supervisd")
    assert isinstance(result.exception, UsageError) and "supervisd" in str(result.exception)
    result = invoke("train", "supervisd", "--debug")
    assert isinstance(result.exception, UsageError)


def test_overrides_are_typed_in_the_resolved_recipe(tmp_path):
    result = invoke(*MLP, "--epochs", "1", "-o", "optim.lr=0.05", "-o", "optim.nesterov=true",
                    "-o", "schedule.milestones=[1, 2]", "-o", "data.batch_size=128", "--seed", "3", "--out", "run")
    assert result.exit_code == 0, result.output
    recipe = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert recipe["optim"]["lr"] == 0.05 and recipe["optim"]["nesterov"] is True
    assert recipe["schedule"]["milestones"] == [1, 2] and recipe["data"]["batch_size"] == 128
    assert recipe["epochs"] == 1 and recipe["seed"] == 3 and recipe["model"]["arch"] == "mlp"


def test_listing_verbs_json_shapes():
    methods = {m["name"]: m for m in json.loads(invoke("methods", "--json").stdout)}
    sup = methods["supervised"]
    assert set(sup) == {"name", "verbs", "plugin", "summary", "default_recipe", "options", "paper"}
    assert sup["verbs"] == ["train", "evaluate"] and sup["plugin"] == "supervised"
    assert sup["options"]["--arch"] == "model.arch" and sup["default_recipe"] == "supervised/digits"

    wrn = json.loads(invoke("models", "*wrn*", "--json").stdout)
    assert wrn and all("wrn" in a["name"] for a in wrn) and "wrn-16-2" in [a["name"] for a in wrn]
    assert set(wrn[0]) == {"name", "summary", "kwargs", "plugin"} and wrn[0]["plugin"] == "toolbox"

    digits = next(d for d in json.loads(invoke("datasets", "--json").stdout) if d["name"] == "digits")
    assert (digits["classes"], digits["shape"], digits["present"]) == (10, [1, 8, 8], True)

    recipes = {r["name"]: r for r in json.loads(invoke("recipes", "--json").stdout)}
    assert recipes["supervised/digits"]["method"] == "supervised"
    assert recipes["supervised/digits"]["expect"]["value"] == 0.97
    assert set(recipes["supervised/digits"]) == {"name", "method", "plugin", "expect", "description", "path"}

    assert invoke("recipes", "supervised/*", "--json").exit_code == 0
    assert {p["name"] for p in json.loads(invoke("plugins", "--json").stdout)} >= {"supervised"}


def test_evaluate_json_shape(tmp_path):
    assert invoke(*MLP, "--epochs", "3", "--out", "run").exit_code == 0
    result = invoke("evaluate", "run", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["metrics"]) >= {"accuracy"} and isinstance(report["metrics"]["accuracy"], float)
    assert report["metrics"]["accuracy"] > 0.8  # 3 epochs of an MLP on digits; chance is 0.1
    assert report["method"] == "supervised" and report["source"]["path"] == "run"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert report["metrics"]["accuracy"] == pytest.approx(summary["accuracy"], abs=1e-6)
    # an option this evaluation does not read is refused, not silently dropped from the result
    line = one_line_usage_error(invoke("evaluate", "run", "--baselines", "random"))
    assert line == "error: evaluating a supervised model does not take --baselines; it takes no options besides --metric"
    # a condensation metric on a classifier run names what is wrong
    line = one_line_usage_error(invoke("evaluate", "run", "--metric", "dc"))
    assert line.startswith("error: run is not a condensation run (config.json format is 'toolbox-model')")


def test_evaluate_of_a_folder_that_is_not_an_artifact_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("evaluate", "empty")
    assert result.exit_code == 1 and result.stderr.startswith("error: empty has no config.json")
    assert one_line_usage_error(invoke("evaluate", "nowhere")).startswith("error: nowhere does not exist")
