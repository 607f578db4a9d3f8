"""Image folders as datasets: layout, split, decoding, statistics cache, the CLI, and methods run on them."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers_images import digits_arrays, encode, write_digits_folder, write_pattern_folder

from toolbox import data, runs
from toolbox.cli import cli
from toolbox.data import sources
from toolbox.errors import RunError, UsageError

torch.set_num_threads(1)


def _accuracy(run_dir) -> float:
    return json.loads((run_dir / "summary.json").read_text())["accuracy"]


def _records(run_dir) -> dict:
    return json.loads((run_dir / "run.json").read_text())["records"]


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    return write_digits_folder(tmp_path_factory.mktemp("digits-folder") / "digits")


def test_digits_folder_holds_the_builtin_pixels_split_and_statistics(digits_folder):
    folder = data.load(str(digits_folder))
    builtin = data.load("digits")
    train_x, train_y, test_x, test_y = digits_arrays()
    assert folder.shape == (1, 8, 8) and folder.num_classes == 10
    assert folder.spec.classes == tuple(f"digit{d}" for d in range(10))
    assert len(folder.train_y) == 1352 and len(folder.test_y) == 445
    # the PNGs hold the values rounded to bytes; class by class, in file order = the built-in order
    for c in range(10):
        expected = torch.from_numpy(train_x[train_y == c].astype(np.float32) / 255)
        assert torch.equal(folder.train_x[folder.train_y == c][:, 0], expected)
    assert folder.mean == pytest.approx(builtin.mean, abs=2e-3) and folder.std == pytest.approx(builtin.std, abs=2e-3)
    assert folder.spec.source["split"] == {"kind": "folders", "train": "train", "test": "val"}


def test_digits_folder_trains_within_one_point_of_builtin_digits(digits_folder, tmp_path):
    common = ["model.arch=mlp", "epochs=8", "seed=3"]
    builtin, _ = runs.execute("train", "supervised", None, common, out=tmp_path / "builtin", device="cpu")
    folder, _ = runs.execute("train", "supervised", None, [*common, f"data.dataset={digits_folder}"],
                             out=tmp_path / "folder", device="cpu")
    a_builtin, a_folder = _accuracy(builtin), _accuracy(folder)
    assert a_folder > 0.9 and abs(a_folder - a_builtin) <= 0.01, (a_folder, a_builtin)
    recorded = _records(folder)["data"]
    assert recorded["kind"] == "folder" and recorded["path"] == str(digits_folder)
    assert recorded["split"]["kind"] == "folders" and len(recorded["fingerprint"]) == 64
    assert _records(builtin)["data"]["kind"] == "builtin"
    # the saved model names the folder; evaluating it reads the folder again
    result = CliRunner().invoke(cli, ["evaluate", str(folder), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dataset"] == str(digits_folder) and report["metrics"]["accuracy"] == pytest.approx(a_folder)


def test_stratified_split_formats_modal_size_and_channels(tmp_path):
    root = write_pattern_folder(tmp_path / "photos", n_classes=3, per_class=20, size=12,
                                formats=("PNG", "JPEG", "WEBP"), sizes=(12, 12, 16))
    d = data.load(str(root))
    assert d.shape == (3, 12, 12)  # colour, the modal size; the 16x16 ones are resized
    assert d.spec.classes == ("class0", "class1", "class2")
    assert len(d.test_y) == 12 and torch.bincount(d.test_y).tolist() == [4, 4, 4]  # 20 % of each class
    assert d.spec.source["split"] == {"kind": "stratified", "test_fraction": 0.2, "seed": 0}
    again = data.load(str(root) + "/")
    assert torch.equal(again.test_x, d.test_x)  # the split is fixed by its seed
    small = data.load(f"{root}?image_size=8")
    assert small.shape == (3, 8, 8) and small.name == f"{root}?image_size=8"

    gray = write_pattern_folder(tmp_path / "gray", channels=1, per_class=5)
    assert data.load(str(gray)).shape == (1, 12, 12)  # grayscale stays one channel
    assert data.load(f"{gray}?channels=3").shape == (3, 12, 12)


def test_statistics_are_cached_beside_the_fingerprint_and_recomputed_when_files_change(tmp_path):
    root = write_pattern_folder(tmp_path / "photos", per_class=6)
    first = data.load(str(root))
    cache = sources.cache_file(str(root))
    saved = json.loads(cache.read_text())
    assert cache.is_relative_to(runs.toolbox_home()) and saved["mean"] == list(first.mean)
    assert saved["fingerprint"] == first.spec.source["fingerprint"]
    # a cached entry is used as it is (poisoned here to prove it)
    cache.write_text(json.dumps({**saved, "mean": [0.5, 0.5, 0.5]}))
    data._cache.clear()  # a new process
    assert data.load(str(root)).mean == (0.5, 0.5, 0.5)
    # a changed file changes the fingerprint: the statistics are computed again
    victim = next((root / "class0").iterdir())
    victim.write_bytes(encode(np.full((12, 12, 3), 255, dtype=np.uint8)))
    os.utime(victim, ns=(1, 1))
    changed = data.load(str(root))
    assert changed.spec.source["fingerprint"] != saved["fingerprint"]
    assert changed.mean != (0.5, 0.5, 0.5) and json.loads(cache.read_text())["fingerprint"] == changed.spec.source["fingerprint"]


def test_datasets_command_describes_a_folder(tmp_path):
    root = write_pattern_folder(tmp_path / "photos", n_classes=2, per_class=10, sizes=(12, 12, 12, 20))
    result = CliRunner().invoke(cli, ["datasets", str(root)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "classes (2):" in out and "class0: 8 train" in out and "16 train / 4 test" in out
    assert "12x12 (15), 20x20 (5)" in out and "decoded as 3x12x12" in out
    assert "stratified, 0.2 of each class for testing, seed 0" in out and str(sources.cache_dir()) in out
    as_json = json.loads(CliRunner().invoke(cli, ["datasets", str(root), "--json"]).stdout)
    assert as_json["classes"] == ["class0", "class1"] and as_json["train"] == 16


def test_recipes_take_a_folder_path_and_fold_image_size_into_it(tmp_path, monkeypatch):
    from toolbox import plugins
    from toolbox.recipes import load_recipe

    root = write_pattern_folder(tmp_path / "photos", per_class=5)
    monkeypatch.chdir(tmp_path)
    method = plugins.load().registry.method("supervised")
    recipe, text = load_recipe(method, None, ["data.dataset=./photos", "data.image_size=16"])
    assert recipe.data.dataset == f"{root}?image_size=16" and recipe.data.image_size == 16
    again, _ = load_recipe(method, None, [f"data.dataset={recipe.data.dataset}"])  # the saved form reads back
    assert again.data.dataset == recipe.data.dataset
    with pytest.raises(UsageError, match="has a fixed size"):
        load_recipe(method, None, ["data.image_size=16"])  # digits
    with pytest.raises(UsageError, match="neither a registered dataset .* nor a folder"):
        load_recipe(method, None, ["data.dataset=./nope"])


# --- bad folders: one line naming the problem and the fix ------------------------------------------

def _bad_load(ref):
    with pytest.raises((RunError, UsageError)) as e:
        data.load(str(ref))
    line = str(e.value)
    assert "\n" not in line
    return line


def test_bad_folders_are_one_line_each(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "holds no class subfolders" in _bad_load(tmp_path / "empty")

    root = write_pattern_folder(tmp_path / "hollow", per_class=3)
    (root / "class9").mkdir()
    (root / "class9" / "notes.txt").write_text("no images here")
    assert f"class folder {root / 'class9'} holds no images" in _bad_load(root)

    root = write_pattern_folder(tmp_path / "truncated", per_class=3)
    victim = root / "class1" / "img0003.png"
    victim.write_bytes(victim.read_bytes()[:60])
    line = _bad_load(root)
    assert str(victim) in line and "not a readable image" in line

    root = write_pattern_folder(tmp_path / "garbage", per_class=3)
    (root / "class0" / "zz.jpg").write_bytes(b"this is not a jpeg")
    assert f"{root / 'class0' / 'zz.jpg'} is not a readable image" in _bad_load(root)

    root = write_pattern_folder(tmp_path / "mixed", per_class=4)
    odd = root / "class2" / "gray.png"
    odd.write_bytes(encode(np.zeros((12, 12), dtype=np.uint8)))
    line = _bad_load(root)
    assert "mixes channel counts: 1 grayscale image(s)" in line and str(odd) in line and "data.channels=3" in line
    assert data.load(f"{root}?channels=3").shape == (3, 12, 12)  # the fix the line names

    root = tmp_path / "splits"
    write_pattern_folder(root / "train", per_class=3)
    write_pattern_folder(root / "val", n_classes=4, per_class=1)
    assert f"{root / 'val' / 'class3'} is a class that {root / 'train'} lacks" in _bad_load(root)


# --- every method takes a folder ------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """300 small colour PNGs in 3 classes."""
    return write_pattern_folder(tmp_path_factory.mktemp("photos") / "photos", n_classes=3, per_class=100, size=8)


def test_dc_condensation_runs_on_a_folder(photos, tmp_path, monkeypatch):
    monkeypatch.chdir(photos.parent)
    result = CliRunner().invoke(cli, ["condense", "./photos", "--ipc", "1", "-o", "iterations=5", "-o", "init=real", "-o", "eval.models=1",
                                      "-o", "eval.epochs=30", "--out", str(tmp_path / "dc"), "--device", "cpu",
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "dc" / "config.json").read_text())
    assert config["dataset"] == str(photos) and config["input_shape"] == [3, 8, 8] and config["num_classes"] == 3
    assert config["method"] == "dc" and _records(tmp_path / "dc")["data"]["path"] == str(photos)
    assert _accuracy(tmp_path / "dc") > 0.6  # chance: 1/3


def test_kd_distillation_runs_on_a_folder(photos, tmp_path):
    teacher, _ = runs.execute("train", "supervised", None, [f"data.dataset={photos}", "model.arch=mlp", "epochs=3"],
                              out=tmp_path / "teacher", device="cpu")
    assert _accuracy(teacher) > 0.9
    out, metrics = runs.execute("distill", "kd", "kd/digits-kdat-m5",
                                [f"data.dataset={photos}", f"teacher.source={teacher}", "student.arch=mlp",
                                 "loss.kind=kd", "schedule.epochs=2", "data.shots=10", "schedule.scale_with_shots=false"],
                                out=tmp_path / "kd", device="cpu")
    assert metrics["teacher_accuracy"] > 0.9 and metrics["accuracy"] > 1 / 3
    assert json.loads((out / "config.json").read_text())["dataset"] == str(photos)


# --- larger than memory: streamed from disk ---------------------------------------------------------

def _losses(run_dir) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_budget_below_the_decoded_size_streams_with_identical_losses(digits_folder, tmp_path, monkeypatch):
    common = ["model.arch=mlp", "epochs=3", "seed=5", f"data.dataset={digits_folder}"]
    monkeypatch.setenv("TOOLBOX_MEMORY_BUDGET", "1G")
    memory, _ = runs.execute("train", "supervised", None, common, out=tmp_path / "memory", device="cpu")
    monkeypatch.setenv("TOOLBOX_MEMORY_BUDGET", "100K")  # the 1352 decoded training images take 346 KB
    streamed, _ = runs.execute("train", "supervised", None, common, out=tmp_path / "streamed", device="cpu")
    loading = _records(streamed)["data"]["loading"]
    assert loading == {"train": "streamed", "decoded_train_bytes": 1352 * 64 * 4, "memory_budget": 100 * 1024}
    assert _records(memory)["data"]["loading"]["train"] == "memory"
    assert _losses(streamed) == _losses(memory) and _accuracy(streamed) == _accuracy(memory)
    # decoded by a worker process: the order is still drawn in the main process, so the same again
    workers, _ = runs.execute("train", "supervised", None, [*common, "data.loader=stream", "data.workers=1"],
                              out=tmp_path / "workers", device="cpu")
    assert _losses(workers) == _losses(memory)

    # KD streams too: the whole split, or a few shots decoded into memory; the same losses either way
    kd = [f"data.dataset={digits_folder}", "student.arch=mlp", "loss.kind=ce", "schedule.epochs=1",
          "schedule.scale_with_shots=false"]
    for shots in (0, 5):
        monkeypatch.setenv("TOOLBOX_MEMORY_BUDGET", "1G")
        kd_memory, _ = runs.execute("distill", "kd", "kd/digits-ce", [*kd, f"data.shots={shots}"],
                                    out=tmp_path / f"kd-memory-{shots}", device="cpu")
        monkeypatch.setenv("TOOLBOX_MEMORY_BUDGET", "100K")
        kd_streamed, _ = runs.execute("distill", "kd", "kd/digits-ce", [*kd, f"data.shots={shots}"],
                                      out=tmp_path / f"kd-streamed-{shots}", device="cpu")
        assert _records(kd_streamed)["data"]["loading"]["train"] == "streamed"
        assert _losses(kd_streamed) == _losses(kd_memory) and _accuracy(kd_streamed) == _accuracy(kd_memory)

    d = data.load(str(digits_folder))
    assert d.streamed and len(d.train_stream) == 1352
    with pytest.raises(RunError, match=r"needs the training split of .* in memory.*raise TOOLBOX_MEMORY_BUDGET"):
        d.train_x.to("cpu")  # a method that wants the tensor: one line, not an AttributeError



def _condense_losses(run_dir) -> list[float]:
    """Each iteration's loss, then the last again beside the accuracy."""
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_condensation_samples_its_real_batches_from_the_stream_with_identical_images(digits_folder, tmp_path,
                                                                                      monkeypatch):
    from toolbox.artifacts import load_synthetic

    decoded = []
    item = sources.StreamedImages.__getitem__
    monkeypatch.setattr(sources.StreamedImages, "__getitem__", lambda self, i: decoded.append(i) or item(self, i))
    monkeypatch.setattr(runs.Run, "save_images", lambda run, name, *a, **kw: run.dir / "images" / f"{name}.png")
    batch, iterations = 16, 3
    for method in ("dm", "dc"):
        common = [f"data.dataset={digits_folder}", "ipc=1", f"iterations={iterations}", "init=real", "log_every=1",
                  f"data.batch_real={batch}", "eval.models=1", "eval.epochs=5"]
        dirs = {}
        for budget in ("1G", "100K"):
            monkeypatch.setenv("TOOLBOX_MEMORY_BUDGET", budget)
            decoded.clear()
            dirs[budget], _ = runs.execute("condense", method, None, common, out=tmp_path / f"{method}-{budget}",
                                           device="cpu")
        memory, streamed = dirs["1G"], dirs["100K"]
        assert _records(memory)["real_images"] == {"loading": "memory"}
        record = _records(streamed)["real_images"]
        assert record["loading"] == "streamed" and _records(streamed)["data"]["loading"]["train"] == "streamed"
        # the initial images and each iteration's per-class batches, never the 1352 images of the split
        assert len(decoded) == record["decoded_rows"] <= 10 * (1 + batch * iterations) < record["split_rows"] == 1352
        assert _condense_losses(streamed) == _condense_losses(memory) and len(_condense_losses(memory)) == iterations + 1
        assert torch.equal(load_synthetic(str(streamed)).images, load_synthetic(str(memory)).images)
        assert _accuracy(streamed) == _accuracy(memory)



def test_a_streamed_split_draws_the_random_baseline_from_disk_and_refuses_the_greedy_ones(digits_folder, monkeypatch):
    from toolbox_condense import baselines

    picked = {}
    for budget in ("1G", "100K"):
        monkeypatch.setenv("TOOLBOX_MEMORY_BUDGET", budget)
        d = data.load(str(digits_folder))
        picked[budget] = baselines.select("random", d, 3, None, 0, "cpu", None, torch.Generator().manual_seed(4))
    assert d.streamed
    assert all(torch.equal(a, b) for a, b in zip(picked["1G"], picked["100K"])) and picked["1G"][0].shape[0] == 30
    for name in ("herding", "kcenter", "whole"):
        with pytest.raises(RunError, match=rf"^the {name} baseline .*needs the training split .*raise TOOLBOX_MEMORY_BUDGET"):
            baselines.select(name, d, 3, None, 0, "cpu", None, torch.Generator())


PEAK = """
import json, sys
import torch
from toolbox import data, engine

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

def epoch(ref):
    d = data.load(ref)
    batches = engine.make_batches(d.normalized_train(), d.train_y, engine.BatchSource(batch_size=64),
                                  torch.Generator().manual_seed(0), "cpu")
    return d, sum(len(y) for _, y in batches.epoch(0))

torch.set_num_threads(1)
epoch(sys.argv[2])  # warm-up on a small folder: every import and first-use allocation happens here
open("/proc/self/clear_refs", "w").write("5")  # resets the peak resident size (VmHWM)
before = status("VmRSS:")
d, seen = epoch(sys.argv[1])
print(json.dumps({"peak_growth": status("VmHWM:") - before, "seen": seen, "streamed": d.streamed}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's peak-RSS reset")
def test_streaming_a_folder_four_times_the_budget_keeps_peak_memory_under_the_budget(tmp_path):
    import subprocess
    import sys

    big = tmp_path / "big"
    write_pattern_folder(big / "train", n_classes=4, per_class=1000, size=32)  # 4000 x 3x32x32: 49 MB as float32
    write_pattern_folder(big / "val", n_classes=4, per_class=5, size=32)
    small = write_pattern_folder(tmp_path / "small", n_classes=4, per_class=20, size=32)
    decoded = 4000 * 3 * 32 * 32 * 4
    budget = decoded // 4

    def peak(budget_bytes):
        env = {**os.environ, "TOOLBOX_MEMORY_BUDGET": str(budget_bytes)}
        out = subprocess.run([sys.executable, "-c", PEAK, str(big), str(small)], env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.splitlines()[-1])

    streamed = peak(budget)
    assert streamed["streamed"] and streamed["seen"] == 4000
    assert streamed["peak_growth"] < budget, streamed  # no model here: batches, decode buffers, the small val split
    in_memory = peak(10 * decoded)
    assert not in_memory["streamed"] and in_memory["peak_growth"] > decoded, in_memory  # what streaming avoids


def test_cards_name_a_folder_by_its_name_and_a_hub_dataset_by_its_repo():
    from toolbox.hub import build_card

    for ref, shown in (("/home/me/my-photos?image_size=32", "my-photos"), ("hf-hub:org/pics@" + "a" * 40, "org/pics"),
                       ("digits", "digits")):
        card = build_card({"method": "dc", "dataset": ref, "format": "toolbox-condensed", "metrics": {}}, {}, "me/x", "")
        assert f"on `{shown}`" in card and "/home/me" not in card
