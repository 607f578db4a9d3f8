"""The gradient-leakage audit: iDLG recovers digits (labels exactly, images to MSE < 1e-3) from the
gradients of the reference sigmoid LeNet, it audits runs of any method, and it says when the label
rule's assumption does not hold."""

import json

import torch
import torch.nn as nn
from click.testing import CliRunner

from toolbox.cli import cli


def _invoke(*args) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"] if args[0] == "evaluate" else list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if args[0] == "evaluate" else {}


def _audit(path, *args) -> dict:
    return _invoke("evaluate", str(path), "--metric", "gradient-leakage", "--device", "cpu", *args)


def test_idlg_recovers_digits_from_a_fresh_sigmoid_lenet(tmp_path):
    """The done criterion: 10 digits, 30 LBFGS steps. Measured: labels 10/10, 10/10 below MSE 1e-3, ~3 CPU-s."""
    run = tmp_path / "victim"
    _invoke("train", "supervised", "-r", "leakage/digits-lenet", "-o", "epochs=1", "--out", str(run),
            "--device", "cpu", "--threads", "1")
    report = _audit(run, "--untrained", "--n", "10", "--iters", "30", "--out", str(tmp_path / "audit"))
    m = report["metrics"]
    assert report["method"] == "gradient-leakage" and report["protocol"]["model"] == "freshly initialised"
    assert m["label_accuracy"] == 1.0
    assert m["recovered_mse<0.001"] >= 0.6
    assert m["psnr"] > 30 and m["cpu_seconds_per_example"] * 10 < 120
    assert all(e["label_assumption_holds"] for e in report["examples"]) and not report["notes"]
    assert len({e["index"] for e in report["examples"]}) == 10
    png = tmp_path / "audit" / "gradient_leakage.png"
    assert report["files"] == [str(png)] and png.stat().st_size > 2000
    # the DLG baseline optimises a soft label as well; its label is the soft label's argmax
    dlg = _audit(run, "--untrained", "--mode", "dlg", "--n", "3", "--iters", "30", "--out", str(tmp_path / "dlg"))
    assert dlg["protocol"]["mode"] == "dlg" and all(0 <= e["recovered_label"] < 10 for e in dlg["examples"])


def test_audits_a_run_of_another_method_and_reads_relu_labels_exactly(tmp_path):
    """`--metric gradient-leakage` on a sam run (ReLU MLP): dispatched to the audit, labels exact."""
    run = tmp_path / "sam"
    _invoke("train", "sam", "--epochs", "2", "--out", str(run), "--device", "cpu", "--threads", "1")
    report = _audit(run, "--n", "8", "--iters", "1", "--seed", "3")
    assert report["protocol"]["model"] == "trained weights" and report["architecture"] == "mlp"
    assert report["metrics"]["label_accuracy"] == 1.0 and not report["notes"]
    assert json.loads((run / "config.json").read_text())["method"] == "sam"


def test_says_when_the_last_layer_breaks_the_label_assumption(tmp_path):
    """A ViT's head reads LayerNorm outputs, which go negative: the result says so."""
    from toolbox import artifacts, data, plugins
    from toolbox.registry import current

    plugins.load()
    digits = data.load("digits")
    model = current().architecture("vit-tiny")(num_classes=10, in_channels=1, image_size=8)
    artifacts.save_model(tmp_path, model, arch="vit-tiny", arch_kwargs={}, dataset=digits.spec, method="supervised")
    report = _audit(tmp_path, "--n", "2", "--iters", "1")
    assert not any(e["label_assumption_holds"] for e in report["examples"])
    assert "non-negative inputs" in report["notes"] and "2/2" in report["notes"]


def test_label_rule_only_the_true_class_row_is_negative():
    """Row c of dL/dW_last is (p_c - y_c) h: with h >= 0 the argmin of the row sums is the label."""
    from toolbox_leakage.idlg import extract_label, victim_gradient

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 9), nn.Sigmoid(), nn.Linear(9, 5))
    for i in range(20):
        x, y = torch.randn(1, 6), torch.tensor([i % 5])
        victim = victim_gradient(model, x, y, 5)
        rows = victim.grads[victim.label_weight_index].sum(dim=1)
        assert (rows < 0).nonzero().flatten().tolist() == [y.item()]
        assert extract_label(victim) == y.item() and victim.penultimate_min >= 0 and victim.logits_from_layer
    # without the activation the inputs to the last layer go negative, and the rule is no longer exact
    linear = nn.Sequential(nn.Linear(6, 9), nn.Linear(9, 5))
    victims = [victim_gradient(linear, torch.randn(1, 6), torch.tensor([i % 5]), 5) for i in range(40)]
    assert all(v.penultimate_min < 0 for v in victims)
    assert sum(extract_label(v) == i % 5 for i, v in enumerate(victims)) < 40


def test_rejects_bad_options(tmp_path):
    run = tmp_path / "sam"
    _invoke("train", "sam", "--epochs", "1", "--out", str(run), "--device", "cpu", "--threads", "1")
    result = CliRunner().invoke(cli, ["evaluate", str(run), "--metric", "gradient-leakage", "--mode", "guess"])
    assert result.exit_code == 2 and "--mode must be idlg or dlg" in result.output
