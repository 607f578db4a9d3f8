"""Image-classification parquet datasets on the Hub (the local Hub-protocol server): pinned to a commit,
read with pyarrow, cached, usable offline; supervised training, DC condensation and KD distillation on one.

The toolbox runs in subprocesses with HF_ENDPOINT / HF_TOKEN / HF_HOME set before huggingface_hub is
imported there (it reads them at import time), as in test_hub.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from fakehub import FakeHub
from helpers_images import card_with_classes, pattern_images, write_parquet

TOKEN = "hf_test_token"
CLASSES = ["red", "green", "blue"]
CPU = ("--device", "cpu", "--threads", "1")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-datasets")
    with FakeHub.running(token=TOKEN) as server:
        images, labels = pattern_images(3, 60, 8, 3)
        order = np.random.default_rng(0).permutation(len(labels))
        test = set(order[:30].tolist())
        train_rows = [i for i in range(len(labels)) if i not in test]
        test_rows = sorted(test)

        def split(rows):
            return [images[i] for i in rows], labels[rows]

        good = root / "pics"
        write_parquet(good / "data" / "train-00000-of-00001.parquet", *split(train_rows))
        write_parquet(good / "data" / "test-00000-of-00001.parquet", *split(test_rows))
        (good / "README.md").write_text(card_with_classes(CLASSES))
        # the schema's features as the `datasets` library writes them, plain binary images, no card
        plain = root / "plain"
        write_parquet(plain / "train" / "0000.parquet", *split(train_rows), struct=False, class_names=CLASSES)
        write_parquet(plain / "test" / "0000.parquet", *split(test_rows), struct=False, class_names=CLASSES)
        no_image = root / "no-image"
        _table_without_images(no_image / "data" / "train-0.parquet")
        bad_label = root / "bad-label"
        imgs, ys = split(train_rows)
        ys = ys.copy()
        ys[7] = 5
        write_parquet(bad_label / "data" / "train-0.parquet", imgs, ys)
        write_parquet(bad_label / "data" / "test-0.parquet", *split(test_rows))
        (bad_label / "README.md").write_text(card_with_classes(CLASSES))
        env = _env(server, root / "hf-upload")
        code = ["from huggingface_hub import HfApi", "api = HfApi()"]
        for name, folder in (("pics", good), ("plain", plain), ("no-image", no_image), ("bad-label", bad_label)):
            code += [f"api.create_repo('org/{name}', repo_type='dataset')",
                     f"api.upload_folder(repo_id='org/{name}', repo_type='dataset', folder_path={str(folder)!r})"]
        result = subprocess.run([sys.executable, "-c", "\n".join(code)], env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        yield server


def _table_without_images(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"caption": ["a", "b"], "label": pa.array([0, 1], type=pa.int64())}), path)


def _env(hub, hf_home, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_TOKEN=TOKEN, HF_HUB_DISABLE_XET="1", HF_HOME=str(hf_home),
               HF_HUB_DISABLE_TELEMETRY="1", TOOLBOX_NO_PROGRESS="1", **extra)
    return env


def toolbox(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "toolbox", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def one_line(result, code=1):
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_hub_dataset_trains_condenses_distils_and_works_offline_once_cached(hub, tmp_path):
    env = _env(hub, tmp_path / "hf")
    described = json.loads(ok(toolbox(env, "datasets", "hf-hub:org/pics", "--json")).stdout)
    assert described["classes"] == CLASSES and described["train"] == 150 and described["test"] == 30
    assert described["shape"] == [3, 8, 8] and described["split"]["splits"] == ["test", "train"]
    commit = described["source"]["commit"]
    assert len(commit) == 40

    ok(toolbox(env, "train", "supervised", "--dataset", "hf-hub:org/pics", "--arch", "mlp", "--epochs", "4",
               "--out", tmp_path / "teacher", *CPU))
    teacher = tmp_path / "teacher"
    assert json.loads((teacher / "summary.json").read_text())["accuracy"] > 0.9
    recorded = json.loads((teacher / "run.json").read_text())["records"]["data"]
    assert recorded["kind"] == "hub" and recorded["repo"] == "org/pics" and recorded["commit"] == commit
    # what the checkpoint names is pinned to the commit: evaluating it later reads the same data
    assert json.loads((teacher / "config.json").read_text())["dataset"] == f"hf-hub:org/pics@{commit}"

    ok(toolbox(env, "condense", "hf-hub:org/pics", "--ipc", "1", "-o", "iterations=3", "-o", "init=real",
               "-o", "eval.models=1", "-o", "eval.epochs=10", "--out", tmp_path / "dc", *CPU))
    assert json.loads((tmp_path / "dc" / "summary.json").read_text())["accuracy"] > 0.6  # chance: 1/3

    ok(toolbox(env, "distill", "kd", "-r", "kd/digits-kdat-m5", "--dataset", "hf-hub:org/pics",
               "-o", f"teacher.source={teacher}", "-o", "student.arch=mlp", "-o", "loss.kind=kd",
               "-o", "schedule.epochs=2", "-o", "data.shots=10", "-o", "schedule.scale_with_shots=false",
               "--out", tmp_path / "kd", *CPU))
    assert json.loads((tmp_path / "kd" / "summary.json").read_text())["teacher_accuracy"] > 0.9

    # offline, from the cache (the branch name resolves to the commit the run recorded)
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    again = json.loads(ok(toolbox(offline, "datasets", "hf-hub:org/pics", "--json")).stdout)
    assert again["source"]["commit"] == commit and again["train"] == 150
    # the teacher names the commit: evaluating it offline reads the same cached data, the same accuracy
    report = json.loads(ok(toolbox(offline, "evaluate", teacher, "--json", "--device", "cpu")).stdout)
    assert report["metrics"]["accuracy"] == json.loads((teacher / "summary.json").read_text())["accuracy"]
    # never fetched: offline cannot have it
    line = one_line(toolbox({**offline, "HF_HOME": str(tmp_path / "hf-empty")}, "datasets", "hf-hub:org/pics"))
    assert "not in the local cache" in line


def test_class_names_from_the_parquet_schema_and_plain_binary_images(hub, tmp_path):
    env = _env(hub, tmp_path / "hf")
    described = json.loads(ok(toolbox(env, "datasets", "hf-hub:org/plain", "--json")).stdout)
    assert described["classes"] == CLASSES and described["train"] == 150


def test_bad_hub_datasets_are_one_line_each(hub, tmp_path):
    env = _env(hub, tmp_path / "hf")
    line = one_line(toolbox(env, "datasets", "hf-hub:org/missing"))
    assert "dataset org/missing: repository not found" in line and "private" in line and "HF_TOKEN" in line
    line = one_line(toolbox({**env, "HF_TOKEN": "hf_wrong"}, "datasets", "hf-hub:org/pics"))
    assert "org/pics" in line and "HF_TOKEN" in line
    line = one_line(toolbox(env, "datasets", "hf-hub:org/no-image"))
    assert "train-0.parquet has no image column" in line and "caption (string), label (int64)" in line
    line = one_line(toolbox(env, "train", "supervised", "--dataset", "hf-hub:org/bad-label", "--arch", "mlp",
                            "--out", tmp_path / "run", *CPU))
    assert "train-0.parquet row 7: label 5 is outside the class list (3 classes: red, green, blue)" in line
    line = one_line(toolbox(env, "datasets", "hf-hub:org/pics@nosuchbranch"))
    assert "no such revision" in line
