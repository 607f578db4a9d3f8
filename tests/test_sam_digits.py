"""The sam method on digits with 20 % label noise: flatter minima (top Hessian eigenvalue) at no cost in
test accuracy, through the CLI; exact resume; and the sam section of the supervised recipe."""

import json

import pytest
from click.testing import CliRunner
from helpers_runs import assert_curves

from toolbox.cli import cli


def _train(tmp_path, name, *args):
    result = CliRunner().invoke(cli, ["train", "sam", *args, "--out", str(tmp_path / name), "--device", "cpu",
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert_curves(tmp_path / name, "train_loss", "accuracy")
    return tmp_path / name


def _evaluate(path, *args) -> dict:
    result = CliRunner().invoke(cli, ["evaluate", str(path), "--json", "--device", "cpu", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.slow
def test_sam_halves_sharpness_without_losing_accuracy_under_label_noise(tmp_path):
    """Recipe sam/digits (MLP, 20 % symmetric noise, 30 epochs), SGD = the same loop with rho 0.

    Measured (seeds 0-2): SGD accuracy 0.917/0.917/0.933, top eigenvalue 3.61/3.99/3.82;
    SAM rho 0.2: 0.966/0.971/0.966, 1.12/1.08/1.26.
    """
    sgd_acc, sam_acc = [], []
    for seed in range(3):
        sgd = _train(tmp_path, f"sgd{seed}", "--rho", "0", "--seed", str(seed))
        sam = _train(tmp_path, f"sam{seed}", "--seed", str(seed))
        sharp_sgd = _evaluate(sgd, "--metric", "hessian")
        sharp_sam = _evaluate(sam, "--metric", "hessian")
        assert sharp_sam["method"] == "hessian" and "20% symmetric noise" in sharp_sam["protocol"]["labels"]
        ratio = sharp_sgd["metrics"]["hessian_top_eigenvalue"] / sharp_sam["metrics"]["hessian_top_eigenvalue"]
        assert ratio >= 2, f"seed {seed}: SAM only {ratio:.2f}x flatter"
        sgd_acc.append(_evaluate(sgd)["metrics"]["accuracy"])
        sam_acc.append(_evaluate(sam)["metrics"]["accuracy"])
    assert sum(sam_acc) >= sum(sgd_acc)
    assert min(a - b for a, b in zip(sam_acc, sgd_acc)) > -0.01


@pytest.mark.slow
def test_fisher_sam_flattens_like_sam(tmp_path):
    """Fisher-SAM gamma 0.2 eta 1 (the spec: F ~ I at ordinary gradient sizes, so close to SAM)."""
    sgd = _train(tmp_path, "sgd", "--rho", "0")
    fisher = _train(tmp_path, "fisher", "--fisher", "--eta", "1", "--gamma", "0.2")
    assert json.loads((fisher / "config.json").read_text())["sam"]["kind"] == "fisher-sam"
    ratio = (_evaluate(sgd, "--metric", "hessian")["metrics"]["hessian_top_eigenvalue"]
             / _evaluate(fisher, "--metric", "hessian")["metrics"]["hessian_top_eigenvalue"])
    assert ratio >= 2
    assert _evaluate(fisher)["metrics"]["accuracy"] >= _evaluate(sgd)["metrics"]["accuracy"]


def test_resumed_sam_run_ends_where_an_uninterrupted_one_does(tmp_path, monkeypatch):
    import toolbox.classifier as training  # the loop the sam method runs
    from toolbox.errors import RunError
    from toolbox.runs import execute

    short = ["epochs=4", "data.label_noise=0.2"]
    _, straight = execute("train", "sam", None, short, out=tmp_path / "straight", device="cpu")
    real_accuracy, calls = training.accuracy, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # evaluating epoch 3, after the checkpoints of epochs 1 and 2
            raise KeyboardInterrupt
        return real_accuracy(*args, **kwargs)

    monkeypatch.setattr(training, "accuracy", interrupted)
    with pytest.raises(RunError, match="--resume"):
        execute("train", "sam", None, short, out=tmp_path / "cut", device="cpu")
    monkeypatch.setattr(training, "accuracy", real_accuracy)
    _, resumed = execute("train", "sam", None, (), device="cpu", resume=tmp_path / "cut")
    assert resumed == straight
    assert [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_supervised_recipe_trains_with_a_sam_section(tmp_path):
    from toolbox.runs import execute

    common = ["model.arch=mlp", "epochs=3"]
    plain_dir, plain = execute("train", "supervised", None, common, out=tmp_path / "plain", device="cpu")
    sam_dir, sam = execute("train", "supervised", None, common + ["sam.rho=0.1"], out=tmp_path / "sam", device="cpu")
    assert "rho: 0.1" in (sam_dir / "recipe.yaml").read_text()
    assert sam["accuracy"] > 0.9 and sam["train_loss"] != plain["train_loss"]
