"""No command loses data: --out refuses folders it would overwrite, a run directory has one writer at
a time (checked with real processes), --resume continues only the verb and method it was made with,
a killed write's temporary file is cleared, and a checkpoint that no longer fits is one sentence.
Every refused command leaves the file tree exactly as it was."""

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from toolbox import locks, plugins, runs
from toolbox.cli import cli
from toolbox.errors import RunError, UsageError

MLP = ["supervised", "--arch", "mlp", "--threads", "1", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with its content hash (None for folders)."""
    return {str(p.relative_to(root)): None if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def refused(result, code=2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def interrupted_mlp_run(monkeypatch, out: Path, epochs=3, at=2, overrides=()) -> Path:
    """A supervised MLP run stopped (Ctrl-C) as it was about to write checkpoint ``at``."""
    save = runs.Run.save_checkpoint

    def save_or_interrupt(self, state, step):
        if step == at:
            raise KeyboardInterrupt
        save(self, state, step)

    with monkeypatch.context() as m:
        m.setattr(runs.Run, "save_checkpoint", save_or_interrupt)
        with pytest.raises(RunError, match="interrupted"):
            runs.execute("train", "supervised", None, ["model.arch=mlp", f"epochs={epochs}", *overrides],
                         out=out, device="cpu")
    return out


# --- --out ------------------------------------------------------------------------------------------


def test_out_refuses_a_folder_with_other_files_and_changes_nothing(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.safetensors").write_bytes(b"my own weights")
    (mine / "notes.txt").write_text("keep")
    before = snapshot(tmp_path)
    line = refused(invoke("train", *MLP, "--epochs", "1", "--out", mine))
    assert line == (f"error: --out {mine} is not empty and holds no run (model.safetensors, notes.txt); "
                    "a run would overwrite files of the same names: give a new or empty folder")
    assert snapshot(tmp_path) == before


def test_out_accepts_an_empty_existing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("train", *MLP, "--epochs", "1", "--out", "empty")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "empty" / "run.json").read_text())
    assert info["status"] == "finished" and not (tmp_path / "empty" / locks.LOCK_NAME).exists()
    # a folder holding a run: continue it, never start a second one over it
    before = snapshot(tmp_path)
    line = refused(invoke("train", *MLP, "--epochs", "1", "--out", "empty"))
    assert line == "error: empty already holds a run; continue it with --resume empty or choose another --out"
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("target, danger", [
    ("/", "the filesystem root"),
    ("HOME", "your home directory"),
    ("..", "a folder above the current directory"),
    ("../..", "a folder above the current directory"),
])
def test_out_refuses_dangerous_folders(tmp_path, monkeypatch, target, danger):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    target = str(home) if target == "HOME" else target
    root_before = set(os.listdir("/"))
    before = snapshot(tmp_path)
    line = refused(invoke("train", *MLP, "--epochs", "1", "--out", target))
    assert line.startswith(f"error: --out {target} is {danger}; ") and "give a new or empty folder" in line
    assert snapshot(tmp_path) == before and set(os.listdir("/")) == root_before


# --- --resume: verb and method ---------------------------------------------------------------------


def test_resume_refuses_another_verb_or_method(tmp_path, monkeypatch):
    run = interrupted_mlp_run(monkeypatch, tmp_path / "sup")
    before = snapshot(tmp_path)
    line = refused(invoke("distill", "kd", "--resume", run))
    assert line == (f"error: {run} was made by `toolbox train supervised`, not `toolbox distill kd`; "
                    f"continue it with: toolbox train --resume {run}")
    assert refused(invoke("train", "sam", "--resume", run)).startswith(
        f"error: {run} was made by `toolbox train supervised`, not `toolbox train sam`;")
    assert refused(invoke("condense", "--resume", run)).startswith(
        f"error: {run} was made by `toolbox train supervised`, not `toolbox condense`;")
    assert snapshot(tmp_path) == before
    # the verb alone, or the verb and the run's own method, continue it
    result = invoke("train", "supervised", "--resume", run, "--threads", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert steps(run) == [1, 2, 3] and json.loads((run / "run.json").read_text())["status"] == "finished"


def test_condense_resume_takes_the_runs_own_method(tmp_path, monkeypatch):
    """`condense --resume` continues a dm run although --method defaults to dc; a typed --method must match."""
    save = runs.Run.save_checkpoint

    def save_or_interrupt(self, state, step):
        if step == 2:
            raise KeyboardInterrupt
        save(self, state, step)

    with monkeypatch.context() as m:
        m.setattr(runs.Run, "save_checkpoint", save_or_interrupt)
        result = invoke("condense", "digits", "--method", "dm", "--threads", "1", "--device", "cpu", "--out", "dm",
                        "-o", "iterations=3", "-o", "checkpoint_every=1", "-o", "eval.models=1", "-o", "eval.epochs=2")
    assert refused(result, code=1) == "error: interrupted; continue from the last checkpoint with: " \
                                      "toolbox condense --resume dm"
    line = refused(invoke("condense", "--method", "dc", "--resume", "dm"))
    assert line == "error: dm was made by `toolbox condense dm`, not `toolbox condense dc`; " \
                   "continue it with: toolbox condense --resume dm"
    result = invoke("condense", "--resume", "dm", "--threads", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "dm" / "run.json").read_text())["status"] == "finished"


def test_resume_of_a_garbage_run_record_is_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{not json")
    before = snapshot(tmp_path)
    line = refused(invoke("train", "--resume", "run"), code=1)
    assert line.startswith("error: run/run.json is not valid JSON (") and line.endswith(
        "; the run's record is corrupt, start the run again")
    assert snapshot(tmp_path) == before


# --- leftovers of a killed write, and a checkpoint that no longer fits --------------------------------


def test_resume_removes_the_temporary_files_of_a_killed_write(tmp_path, monkeypatch):
    run = interrupted_mlp_run(monkeypatch, tmp_path / "run")
    stale = [run / "checkpoint" / ".state.safetensors.k1ll3d.tmp", run / ".run.json.x7y8z9.tmp"]
    for p in stale:
        p.write_bytes(b"\0" * 1000)
    kept = run / "checkpoint" / "notes.tmp"  # not a name atomic_write makes
    kept.write_text("mine")
    result = invoke("train", "--resume", run, "--threads", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in stale) and kept.read_text() == "mine"
    assert steps(run) == [1, 2, 3]


def test_a_checkpoint_that_no_longer_fits_the_recipe_is_one_sentence(tmp_path, monkeypatch):
    run = interrupted_mlp_run(monkeypatch, tmp_path / "run")
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["model"]["kwargs"] = {"hidden": 64}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    line = refused(invoke("train", "--resume", run, "--threads", "1", "--device", "cpu"), code=1)
    assert line == (f"error: the checkpoint in {run / 'checkpoint'} does not fit this run: 'model' body.1.weight "
                    "is [256, 64] in the checkpoint but [64, 64] in the model the recipe builds (4 more tensors "
                    f"differ); {run / 'recipe.yaml'} or the checkpoint changed since it was written: restore the "
                    "recipe the run started with, or start a new run")
    recipe["model"] = {"arch": "wrn-10-1"}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    line = refused(invoke("train", "--resume", run, "--threads", "1", "--device", "cpu"), code=1)
    assert line.startswith(f"error: the checkpoint in {run / 'checkpoint'} does not fit this run: 'model' in the "
                           "checkpoint lacks ")
    assert "has extra body.1.weight, body.1.bias and 2 more compared with the model the recipe builds; " in line


# --- one writer per run: real processes -------------------------------------------------------------


def _env(home: Path) -> dict:
    return {**os.environ, "TOOLBOX_HOME": str(home), "TOOLBOX_NO_PROGRESS": "1", "TOOLBOX_NO_DOWNLOAD": "1",
            "OMP_NUM_THREADS": "1"}


def _wait_for(condition, what, proc=None, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before {what}: {proc.stderr.read()}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_resume_of_a_run_another_process_is_writing_is_refused(tmp_path):
    run = tmp_path / "run"
    writer = subprocess.Popen([sys.executable, "-m", "toolbox", "train", *MLP, "--epochs", "15", "--out", str(run)],
                              env=_env(tmp_path / "home"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (run / "checkpoint" / "state.safetensors").exists(), "a checkpoint", writer)
        writer.send_signal(signal.SIGSTOP)  # alive and holding the lock, but no longer writing
        before = snapshot(tmp_path)
        line = refused(invoke("train", "--resume", run, "--threads", "1", "--device", "cpu"))
        assert line.startswith(f"error: {run} is being written by process {writer.pid} since ")
        assert line.endswith(f"wait for it to end, or stop it (kill {writer.pid}) and continue with --resume")
        assert snapshot(tmp_path) == before
    finally:
        writer.kill()  # SIGKILL: the kernel drops its lock; the lock file stays behind, stale
        writer.wait()
    assert json.loads((run / locks.LOCK_NAME).read_text())["pid"] == writer.pid
    result = invoke("train", "--resume", run, "--threads", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert steps(run) == list(range(1, 16))  # each epoch logged once
    assert not (run / locks.LOCK_NAME).exists()


FORKING_HOLDER = """
import os, sys, time
from toolbox import locks
with locks.hold(sys.argv[1]):
    child = os.fork()
    if child == 0:  # a DataLoader worker, say: alive after its parent is killed, until it notices
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    time.sleep(60)
"""


def test_the_lock_ends_with_its_holder_even_while_its_forked_children_live(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", FORKING_HOLDER, str(run)], stdout=subprocess.PIPE, text=True,
                              env=_env(tmp_path / "home"))
    child = int(holder.stdout.readline())
    try:
        with pytest.raises(UsageError, match=f"is being written by process {holder.pid}"):
            with locks.hold(run):
                pass
        holder.kill()
        holder.wait()
        os.kill(child, 0)  # still alive, with its copy of the lock's fd closed at the fork
        with locks.hold(run):
            assert json.loads((run / locks.LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        holder.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


CACHED = """
import os, time
from toolbox import runs
if os.environ.get("SLOW"):  # pause after each checkpoint, so the test surely catches this process mid-run
    save = runs.Run.save_checkpoint
    runs.Run.save_checkpoint = lambda self, state, step: (save(self, state, step), time.sleep(0.3))
print(runs.cached_run("train", "supervised", recipe="supervised/digits", device="cpu",
                      overrides=["model.arch=mlp", "epochs=%d", "checkpoint_every=1"]))
"""


def _cached(home: Path, epochs: int, slow=False):
    return subprocess.Popen([sys.executable, "-c", CACHED % epochs], env={**_env(home), "SLOW": "1" if slow else ""},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cache_dir(home: Path):
    found = list((home / "cache" / "runs").glob("supervised-*")) if (home / "cache" / "runs").exists() else []
    return found[0] if found else None


def test_two_processes_share_one_cached_run(tmp_path):
    home = tmp_path / "home"
    first = _cached(home, 8, slow=True)
    _wait_for(lambda: _cache_dir(home) is not None and (_cache_dir(home) / "run.json").exists(), "the cached run", first)
    first.send_signal(signal.SIGSTOP)  # hold it mid-run, so the second certainly finds it in progress
    second = _cached(home, 8)
    try:
        waiting = second.stderr.readline()
        assert waiting.startswith(f"waiting for process {first.pid} since ")
        assert waiting.endswith(f", which is making the cached train supervised run {_cache_dir(home)}\n")
    finally:
        first.send_signal(signal.SIGCONT)
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    assert out1 == out2 == f"{_cache_dir(home)}\n"
    assert err2 == ""  # one line only, read above
    assert list((home / "cache" / "runs").iterdir()) == [_cache_dir(home)]
    assert steps(_cache_dir(home)) == list(range(1, 9))  # trained once


def test_a_cached_run_whose_maker_died_is_continued(tmp_path):
    home = tmp_path / "home"
    first = _cached(home, 8, slow=True)
    _wait_for(lambda: _cache_dir(home) is not None
              and (_cache_dir(home) / "checkpoint" / "state.safetensors").exists(), "a checkpoint", first)
    first.kill()
    first.wait()
    run = _cache_dir(home)
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # killed: never marked
    second = _cached(home, 8)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert out == f"{run}\n" and "waiting" not in err
    assert steps(run) == list(range(1, 9)) and json.loads((run / "run.json").read_text())["status"] == "finished"
