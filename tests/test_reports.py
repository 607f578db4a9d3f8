"""What a person reads after a command: at 80 columns (and TERM=dumb) a run's path or a source ref is
printed whole on a line of its own, never wrapped inside a table title."""

from click.testing import CliRunner
from helpers_runs import assert_curves

from toolbox import plugins
from toolbox.cli import cli


def test_paths_are_never_split_across_lines_at_80_columns(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERM", "dumb")
    plugins.reset()
    out = tmp_path / ("a-run-directory-with-a-rather-long-name-" * 3)
    assert len(str(out)) > 100
    trained = CliRunner().invoke(cli, ["train", "supervised", "--arch", "mlp", "--epochs", "1", "--threads", "1",
                                       "--device", "cpu", "--out", str(out)])
    assert trained.exit_code == 0, trained.output
    evaluated = CliRunner().invoke(cli, ["evaluate", str(out), "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    for result in (trained, evaluated):
        assert str(out) in [line.strip() for line in result.stdout.splitlines()], result.stdout
    assert_curves(out, "train_loss", "accuracy", "lr")


def test_methods_and_plugins_listings_fit_80_columns_without_splitting_words(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERM", "dumb")
    plugins.reset()
    registry = plugins.load().registry
    listing = CliRunner().invoke(cli, ["methods"])
    assert listing.exit_code == 0, listing.output
    lines = listing.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    words = set(listing.stdout.split())
    for method in registry.methods.values():
        assert any(line.startswith(f"{method.name}  (") for line in lines)
        assert {f"--{name}" for name in method.options} <= words, method.name
        assert not method.default_recipe or method.default_recipe in words
    table = CliRunner().invoke(cli, ["plugins"])
    assert table.exit_code == 0 and max(map(len, table.stdout.splitlines())) <= 80
    assert {name for name in registry.methods} <= set(table.stdout.replace(",", " ").split())


def test_the_summary_explains_each_number_and_show_repeats_it(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("COLUMNS", "120")
    plugins.reset()
    out = tmp_path / "run"
    trained = CliRunner().invoke(cli, ["train", "supervised", "--arch", "mlp", "--epochs", "3", "--threads", "1",
                                       "--device", "cpu", "--out", str(out)])
    assert trained.exit_code == 0, trained.output
    final = json.loads((out / "summary.json").read_text())["accuracy"]
    text = " ".join(trained.stdout.split())
    assert "fraction of the test split's images the final model classifies correctly" in text
    assert "measured on the digits test split, 445 images" in text
    assert "expected accuracy 0.97 (toolbox's own target on digits" in text
    assert f"this run {final:.4f}, difference {final - 0.97:+.4f}" in text
    assert "reported: the last" not in text  # the last epoch was the best: nothing to say
    # a better value seen during training is named, and the last one is still the one reported
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 2, "accuracy": final + 0.001}) + "\n")
    shown = CliRunner().invoke(cli, ["show", str(out)])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())
    assert f"reported: the last accuracy ({final:.4f}); during training it reached {final + 0.001:.4f} at logged step 2" \
        in text and f"{out / 'images' / 'curves.png'}" in shown.stdout.splitlines()[-1]
    as_json = json.loads(CliRunner().invoke(cli, ["show", str(out), "--json"]).stdout)
    assert as_json["best"]["value"] == final + 0.001 and as_json["test_images"] == 445
    missing = CliRunner().invoke(cli, ["show", str(tmp_path / "nothing")])
    assert missing.exit_code in (1, 2) and len(missing.stderr.splitlines()) == 1


def test_listing_tables_keep_names_whole_and_print_brackets_literally(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    plugins.reset()
    registry = plugins.load().registry
    models = CliRunner().invoke(cli, ["models"])
    assert "ConvNet-3: 3 x [conv 128, instance norm, ReLU," in models.stdout  # not eaten as rich markup
    recipes = CliRunner().invoke(cli, ["recipes"])
    names = {line.split("│")[1].strip() for line in recipes.stdout.splitlines() if line.startswith("│")}
    assert "condense/cifar10-dc-ipc1" in names and "zskt/digits" in names
    assert set(registry.architectures) <= {line.split("│")[1].strip() for line in models.stdout.splitlines()
                                           if line.startswith("│")}


def test_the_datasets_listing_prints_paths_and_file_names_whole(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    plugins.reset()
    registry = plugins.load().registry
    listing = CliRunner().invoke(cli, ["datasets"])
    assert listing.exit_code == 0, listing.output
    words = set(listing.stdout.split())
    for spec in registry.datasets.values():
        assert spec.name in words and spec.where() in words
        assert spec.present() or set(spec.files) <= words
