"""toolbox compare: finished runs grouped by what tells them apart, mean ± std over seeds, the recipe's
expected number and the difference, as a table, Markdown, JSON and a plot."""

import json
import statistics

import pytest
from click.testing import CliRunner

from toolbox import plugins, runs
from toolbox.cli import cli


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Three seeds of one recipe, one run with another learning rate, one unfinished run."""
    root = tmp_path_factory.mktemp("compare")
    plugins.reset()
    base = ["model.arch=mlp", "epochs=1"]
    for seed in (0, 1, 2):
        runs.execute("train", "supervised", None, [*base, f"seed={seed}"], out=root / f"s{seed}", device="cpu")
    runs.execute("train", "supervised", None, [*base, "optim.lr=0.01"], out=root / "slow", device="cpu")
    (root / "broken").mkdir()
    (root / "broken" / "run.json").write_text(json.dumps({"status": "failed", "method": "supervised"}))
    return root


def invoke(*args):
    return CliRunner().invoke(cli, ["compare", *map(str, args)])


def accuracy(run) -> float:
    return json.loads((run / "summary.json").read_text())["accuracy"]


def test_runs_differing_only_by_seed_form_one_group_with_mean_and_std(made):
    result = invoke(made, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["metric"] == "accuracy"  # what the recipe expects
    assert report["by"] == ["method", "dataset", "student", "settings"]
    seeds, slow = report["groups"]
    values = [accuracy(made / f"s{s}") for s in (0, 1, 2)]
    assert seeds["runs"] == 3 and seeds["seeds"] == [0, 1, 2] and seeds["settings"] is None
    assert seeds["mean"] == pytest.approx(statistics.fmean(values))
    assert seeds["std"] == pytest.approx(statistics.stdev(values))
    assert seeds["expected"] == 0.97 and "toolbox's own target" in seeds["expected_source"]
    assert seeds["delta"] == pytest.approx(seeds["mean"] - 0.97)
    # a run with another learning rate is another experiment, named by what differs
    assert slow["runs"] == 1 and slow["settings"] == "optim.lr=0.01" and slow["std"] is None
    assert slow["mean"] == pytest.approx(accuracy(made / "slow"))
    assert report["skipped"] == [f"{made / 'broken'}: failed, not finished"]
    assert seeds["protocol"].startswith("WRN-16-2 on digits")  # the recipe's description (arch overridden)


def test_table_and_markdown_show_percentages_with_expected_and_delta(made):
    values = [accuracy(made / f"s{s}") for s in (0, 1, 2)]
    mean, std = statistics.fmean(values) * 100, statistics.stdev(values) * 100
    md = invoke(made, "--markdown")
    assert md.exit_code == 0, md.output
    lines = md.stdout.splitlines()
    assert lines[0] == "| method | dataset | student | settings | runs | accuracy (%) | expected | Δ |"
    assert lines[2] == f"| supervised | digits | mlp | - | 3 | {mean:.2f} ± {std:.2f} | 97.00 | {mean - 97:+.2f} |"
    assert lines[3].startswith("| supervised | digits | mlp | optim.lr=0.01 | 1 |")
    text = invoke(made)
    assert f"{mean:.2f} ± {std:.2f}" in text.stdout and "left out:" in text.stdout


def test_by_metric_and_plot(made, tmp_path):
    result = invoke(made / "s0", made / "s1", made / "slow", "--by", "method,seed", "--metric", "train_loss",
                    "--json", "--plot", tmp_path / "table.png")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["by"] == ["method", "seed"] and len(report["groups"]) == 2  # s0 and slow share seed 0
    first = json.loads((made / "s0" / "summary.json").read_text())["train_loss"]
    other = json.loads((made / "slow" / "summary.json").read_text())["train_loss"]
    assert report["groups"][0]["mean"] == pytest.approx((first + other) / 2)
    from PIL import Image

    with Image.open(tmp_path / "table.png") as image:
        assert image.size[0] > 300 and image.size[1] > 200


@pytest.mark.parametrize("args, expected", [
    (["--metric", "bleu"], "error: no run reports 'bleu'; --metric one of: accuracy, train_loss"),
    (["--by", " , "], "error: --by needs at least one key, e.g. --by method,student"),
])
def test_bad_comparisons_are_one_line(made, args, expected):
    result = invoke(made, *args)
    assert result.exit_code == 2 and result.stderr.strip() == expected


def test_nothing_finished_is_one_line(made):
    result = invoke(made / "broken")
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: no finished runs to compare ({made / 'broken'}: failed, not finished); "
                                     "pass run directories or a folder holding them")


def test_an_existing_plot_file_is_kept_unless_forced(made, tmp_path):
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's own picture")
    result = invoke(made, "--plot", mine)
    assert result.exit_code == 2 and mine.read_bytes() == b"the user's own picture"
    assert result.stderr.strip() == f"error: --plot {mine} already exists; choose another path or pass --force to replace it"
    assert invoke(made, "--plot", mine, "--force").exit_code == 0 and mine.read_bytes() != b"the user's own picture"
