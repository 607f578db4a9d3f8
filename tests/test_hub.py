"""Hub round trips with the real huggingface_hub client against a Hub-protocol server on 127.0.0.1.

The toolbox runs in subprocesses, as users run it, with HF_ENDPOINT / HF_TOKEN / HF_HOME set before
huggingface_hub is imported there.
"""

import json
import os
import pickle
import subprocess
import sys

import pytest
from fakehub import FakeHub

from toolbox import runs
from toolbox.artifacts import save_synthetic

TOKEN = "hf_test_token"


@pytest.fixture(scope="module")
def hub():
    with FakeHub.running(token=TOKEN) as server:
        yield server


def _env(hub, hf_home, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.endpoint if hub else "http://127.0.0.1:1", HF_TOKEN=TOKEN, HF_HUB_DISABLE_XET="1",
               HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1", TOOLBOX_NO_PROGRESS="1", **extra)
    return env


def toolbox(env, *args):
    return subprocess.run([sys.executable, "-m", "toolbox", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300)


def one_line_failure(result):
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def hf_python(env, code):
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _train(out, seed):
    return runs.execute("train", "supervised", None, ["model.arch=mlp", "epochs=2", f"seed={seed}"], out=out,
                        device="cpu")[0]


def _evaluate(env, ref):
    result = toolbox(env, "evaluate", ref, "--json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_push_pull_evaluate_round_trip_with_revisions(hub, tmp_path):
    first, second = _train(tmp_path / "first", 0), _train(tmp_path / "second", 1)
    local = _evaluate(_env(hub, tmp_path / "hf-local"), first)["metrics"]["accuracy"]

    pushed = toolbox(_env(hub, tmp_path / "hf-push"), "push", first, "org/digits-mlp")
    assert pushed.returncode == 0, pushed.stderr
    sha1 = pushed.stdout.split("commit:")[1].split()[0]
    env = _env(hub, tmp_path / "hf-empty")  # an empty cache
    pulled = toolbox(env, "pull", "org/digits-mlp")
    assert pulled.returncode == 0 and f"commit: {sha1}" in pulled.stdout, pulled.stdout + pulled.stderr
    assert pulled.stderr == ""  # huggingface_hub's own "Fetching N files" bars are silenced
    path = pulled.stdout.split("path:")[1].split()[0]
    assert {"README.md", "config.json", "model.safetensors", "recipe.yaml", "metrics.jsonl"} <= set(os.listdir(path))
    card = open(os.path.join(path, "README.md")).read()
    assert "library_name: toolbox" in card and "model-index" in card and f"{local}"[:6] in card
    report = _evaluate(env, "hf-hub:org/digits-mlp")
    assert report["metrics"]["accuracy"] == local and report["source"]["commit"] == sha1

    again = toolbox(_env(hub, tmp_path / "hf-push"), "push", second, "org/digits-mlp", "-m", "seed 1")
    assert again.returncode == 0, again.stderr
    sha2 = again.stdout.split("commit:")[1].split()[0]
    assert sha2 != sha1
    assert _evaluate(env, f"hf-hub:org/digits-mlp@{sha1}")["metrics"]["accuracy"] == local
    latest = json.loads((second / "summary.json").read_text())["accuracy"]
    assert _evaluate(env, "hf-hub:org/digits-mlp")["metrics"]["accuracy"] == pytest.approx(latest, abs=1e-6)


def test_runs_record_the_exact_commit_of_a_hub_teacher(hub, tmp_path):
    teacher = _train(tmp_path / "teacher", 0)
    env = _env(hub, tmp_path / "hf")
    assert toolbox(env, "push", teacher, "org/teacher").returncode == 0
    out = tmp_path / "kd"
    result = toolbox(env, "distill", "kd", "-r", "kd/digits", "--teacher", "hf-hub:org/teacher@main", "--student", "mlp",
                     "-o", "schedule.epochs=1", "-o", "schedule.milestones=[]", "--out", out, "--threads", "1")
    assert result.returncode == 0, result.stderr
    recorded = json.loads((out / "run.json").read_text())["records"]["teacher"]
    assert recorded["repo"] == "org/teacher" and len(recorded["commit"]) == 40 and recorded["revision"] == "main"


def test_user_card_is_kept_and_condensed_sets_go_to_dataset_repos(hub, tmp_path):
    from toolbox import data

    digits = data.load("digits")
    syn = tmp_path / "syn"
    syn.mkdir()
    save_synthetic(syn, digits.normalize(digits.train_x[:20]), digits.train_y[:20], dataset=digits.spec, method="dc",
                   ipc=2, metrics={"accuracy": 0.5})
    env = _env(hub, tmp_path / "hf")
    assert toolbox(env, "push", syn, "org/digits-syn").returncode == 0
    pulled = toolbox(env, "pull", "org/digits-syn", "--repo-type", "dataset")
    assert pulled.returncode == 0, pulled.stderr
    path = pulled.stdout.split("path:")[1].split()[0]
    card = open(os.path.join(path, "README.md")).read()
    assert "toolbox_metrics:" in card and "accuracy: 0.5" in card
    trained = toolbox(env, "train", "supervised", "--data", "hf-hub:datasets/org/digits-syn", "--arch", "mlp",
                      "--epochs", "2", "--out", tmp_path / "on-syn")
    assert trained.returncode == 0, trained.stderr

    hf_python(env, "from huggingface_hub import HfApi; api = HfApi(); api.create_repo('org/carded', exist_ok=True);"
                   "api.upload_file(path_or_fileobj=b'# my own card', path_in_repo='README.md', repo_id='org/carded')")
    assert toolbox(env, "push", _train(tmp_path / "m", 0), "org/carded").returncode == 0
    path = toolbox(env, "pull", "org/carded").stdout.split("path:")[1].split()[0]
    assert open(os.path.join(path, "README.md")).read() == "# my own card"


def test_pickles_are_never_loaded(hub, tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "pytorch_model.bin"
    bad.write_bytes(pickle.dumps(Payload()))
    env = _env(hub, tmp_path / "hf")
    hf_python(env, "from huggingface_hub import HfApi; api = HfApi(); api.create_repo('org/evil', exist_ok=True);"
                   f"api.upload_file(path_or_fileobj={str(bad)!r}, path_in_repo='pytorch_model.bin', repo_id='org/evil')")
    for args in (("pull", "org/evil"), ("evaluate", "hf-hub:org/evil")):
        line = one_line_failure(toolbox(env, *args))
        assert "only pickled weights (pytorch_model.bin)" in line and "never unpickles" in line
    assert not marker.exists()


def test_bad_references_fail_in_one_line(hub, tmp_path):
    env = _env(hub, tmp_path / "hf")
    assert "repository not found" in one_line_failure(toolbox(env, "pull", "org/does-not-exist"))
    assert toolbox(env, "push", _train(tmp_path / "m", 0), "org/real").returncode == 0
    assert "no such revision" in one_line_failure(toolbox(env, "pull", "org/real@no-such-branch"))
    hf_python(env, "from huggingface_hub import HfApi; api = HfApi(); api.create_repo('org/plain', exist_ok=True);"
                   "api.upload_file(path_or_fileobj=b'hello', path_in_repo='notes.txt', repo_id='org/plain')")
    assert "not a toolbox artifact" in one_line_failure(toolbox(env, "pull", "org/plain"))
    assert "cannot reach the Hub" in one_line_failure(toolbox(_env(None, tmp_path / "hf"), "pull", "org/real"))


def test_offline_uses_the_cache_and_says_what_is_missing(hub, tmp_path):
    env = _env(hub, tmp_path / "hf")
    run = _train(tmp_path / "m", 0)
    assert toolbox(env, "push", run, "org/offline").returncode == 0
    assert toolbox(env, "pull", "org/offline").returncode == 0
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    assert _evaluate(offline, "hf-hub:org/offline")["metrics"]["accuracy"] == json.loads(
        (run / "summary.json").read_text())["accuracy"]
    assert "not in the local cache" in one_line_failure(toolbox(offline, "pull", "org/never-pulled"))


def _student(env, teacher, out):
    result = toolbox(env, "distill", "kd", "-r", "kd/digits", "--teacher", teacher, "--student", "mlp", "-o",
                     "schedule.epochs=1", "-o", "schedule.milestones=[]", "--out", out, "--threads", "1")
    assert result.returncode == 0, result.stderr
    return out


def test_a_student_travels_with_its_teacher(hub, tmp_path):
    teacher = _train(tmp_path / "teacher", 0)
    env = _env(hub, tmp_path / "hf")
    student = _student(env, teacher, tmp_path / "student")
    assert json.loads((student / "config.json").read_text())["teacher"]["path"] == str(teacher)
    before = (student / "config.json").read_text()

    refused = toolbox(env, "push", student, "org/student")
    assert refused.returncode == 2 and refused.stderr.strip() == (
        f"error: the student's teacher is a local folder ({teacher}) that no other machine can load; "
        "push it too with --push-teacher ORG/NAME"), refused.stderr
    assert (student / "config.json").read_text() == before

    pushed = toolbox(env, "push", student, "org/student", "--push-teacher", "org/student-teacher")
    assert pushed.returncode == 0, pushed.stderr
    recorded = json.loads((student / "config.json").read_text())["teacher"]
    assert recorded["repo"] == "org/student-teacher" and len(recorded["commit"]) == 40

    # "another machine": an empty Hub cache, and the local teacher gone
    teacher.rename(tmp_path / "elsewhere")
    other = _env(hub, tmp_path / "hf-other")
    report = _evaluate(other, "hf-hub:org/student")
    assert report["teacher"]["repo"] == "org/student-teacher" and report["teacher"]["commit"] == recorded["commit"]
    assert {"accuracy", "teacher_accuracy", "agreement"} <= set(report["metrics"])
    pulled = toolbox(other, "pull", "org/student")
    config = json.loads(open(os.path.join(pulled.stdout.split("path:")[1].split()[0], "config.json")).read())
    assert "path" not in config["teacher"] and "ref" not in config["teacher"]  # no local path of the pushing machine

    # a student whose Hub teacher is already portable pushes without --push-teacher
    again = _student(env, f"hf-hub:org/student-teacher@{recorded['commit']}", tmp_path / "student2")
    assert toolbox(env, "push", again, "org/student2").returncode == 0


def test_a_missing_local_teacher_is_named_with_what_to_pass(tmp_path):
    from toolbox.distilled import teacher_ref
    from toolbox.errors import UsageError

    gone = str(tmp_path / "gone")
    with pytest.raises(UsageError) as local:
        teacher_ref({"teacher": {"path": gone, "ref": gone, "architecture": "wrn-16-2"}}, None)
    assert str(local.value) == (f"the student was distilled from a wrn-16-2 teacher at {gone}, which is not on this "
                                "machine and was never pushed to the Hub; pass that teacher with --teacher "
                                "RUN_DIR_OR_HF_REF (push students with --push-teacher to avoid this)")
    with pytest.raises(UsageError, match=r"recreate it with `toolbox train supervised -r supervised/digits`"):
        teacher_ref({"teacher": {"path": gone, "architecture": "wrn-16-2", "recipe": "supervised/digits"}}, None)
    assert teacher_ref({"teacher": {"path": gone, "repo": "org/t", "commit": "a" * 40}}, None) == f"hf-hub:org/t@{'a' * 40}"
