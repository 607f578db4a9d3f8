"""What a person reads after a command: at 80 columns (and TERM=dumb) a run's path or a source ref is
printed whole on a line of its own, never wrapped inside a table title."""

from click.testing import CliRunner

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
