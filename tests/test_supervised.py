"""The supervised plugin: the digits teacher recipe, training on a condensed set, augmentation."""

import json

import pytest
import torch
from click.testing import CliRunner

from toolbox.cli import cli


def _evaluate(path) -> dict:
    result = CliRunner().invoke(cli, ["evaluate", str(path), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_digits_teacher_recipe_reaches_97_percent(digits_teacher):
    report = _evaluate(digits_teacher)
    assert report["metrics"]["accuracy"] >= 0.97
    assert report["dataset"] == "digits" and report["architecture"] == "wrn-16-2"
    lines = [json.loads(line) for line in (digits_teacher / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 31))  # one line per epoch, with test accuracy
    assert lines[-1]["accuracy"] == pytest.approx(report["metrics"]["accuracy"], abs=1e-6)


def test_trains_on_a_condensed_set_and_tests_on_real_data(tmp_path):
    from toolbox import data
    from toolbox.artifacts import save_synthetic

    digits = data.load("digits")
    idx = torch.cat([torch.nonzero(digits.train_y == c)[:10, 0] for c in range(10)])
    syn_dir = tmp_path / "syn"
    syn_dir.mkdir()
    save_synthetic(syn_dir, digits.normalize(digits.train_x[idx]), digits.train_y[idx], dataset=digits.spec,
                   method="random", ipc=10)
    result = CliRunner().invoke(cli, ["train", "supervised", "--arch", "mlp", "--data", str(syn_dir), "--epochs", "40",
                                      "--batch-size", "32", "--out", str(tmp_path / "run"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    run_info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_info["records"]["trained_on"]["path"] == str(syn_dir)
    # 100 real images are enough for a clear effect on the 445 real test images; chance is 0.1
    assert _evaluate(tmp_path / "run")["metrics"]["accuracy"] > 0.75


def test_random_crop_is_a_shifted_window_and_flip_mirrors():
    from toolbox.augment import random_crop_flip

    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, padding=2, flip=False, generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, oy:oy + 4, ox:ox + 4] for oy in range(5) for ox in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    flipped = random_crop_flip(x, padding=0, flip=True, generator=torch.Generator().manual_seed(3))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
