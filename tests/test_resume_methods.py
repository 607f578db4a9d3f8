"""kill -9 at a random moment, then --resume: every method that checkpoints ends bit-identical to an
uninterrupted run (summary.json, metrics.jsonl without its times, the saved weights).

The killed run is its own process, SIGKILLed after its first checkpoint and before it finishes: at a
seeded random metrics line plus a seeded random fraction of one step's time, so the kill lands anywhere
in a step (between a metrics line and its checkpoint, during a checkpoint write, in a final evaluation
or retraining, ...). For supervised (memory and stream: its DataLoader workers outlive the kill for a
moment) it is a `python -m toolbox` process; for the others a fork of this one running the same CLI,
which spares each case the ~5-15 s of importing torch, dynamo and sklearn again. The uninterrupted run and the resume run here through the CLI (one thread, CPU).
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
import zlib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from toolbox import plugins, runs
from toolbox.cli import cli

pytestmark = pytest.mark.slow

CPU = ["--threads", "1", "--device", "cpu"]
NEEDS_TEACHER = ("kd", "zskt")


@pytest.fixture(autouse=True)
def _fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


def _cases(teacher):
    """name -> (command, overrides, resume command, weights file, lines that may follow the kill).

    One metrics line per step. The last field is 1 where the final line comes right before the run
    ends (the kill must leave a step to run) and 0 where a long final phase follows it (condensation's
    evaluation, FDS's retraining), so the kill can land in that phase too."""
    t = f"teacher.source={teacher}"
    return {
        "supervised": (["train", "supervised"], ["model.arch=mlp", "epochs=10", "checkpoint_every=1"],
                       ["train", "supervised"], "model.safetensors", 1),
        "supervised-stream": (["train", "supervised"], ["model.arch=mlp", "epochs=10", "checkpoint_every=1",
                                                        "data.loader=stream", "data.workers=2"],
                              ["train", "supervised"], "model.safetensors", 1),
        "sam": (["train", "sam"], ["epochs=8", "checkpoint_every=1"], ["train", "sam"], "model.safetensors", 1),
        "kd": (["distill", "kd", "-r", "kd/digits-kdat-m5"],
               [t, "schedule.scale_with_shots=false", "schedule.epochs=10", "schedule.milestones=[5]",
                "checkpoint_every=2", "eval_every=1"], ["distill", "kd"], "model.safetensors", 1),
        "zskt": (["distill", "zskt", "-r", "zskt/digits"],
                 [t, "iterations=6", "batch_size=16", "student_steps=2", "eval_every=1", "checkpoint_every=2"],
                 ["distill", "zskt"], "model.safetensors", 1),
        "dc": (["condense", "digits", "--method", "dc", "-r", "condense/digits-dc-ipc1"],
               ["iterations=6", "checkpoint_every=2", "log_every=1", "data.batch_real=32", "eval.models=1",
                "eval.epochs=20"], ["condense"], "synthetic.safetensors", 0),
        "dm": (["condense", "digits", "--method", "dm", "-r", "condense/digits-dm-ipc1"],
               ["iterations=8", "checkpoint_every=2", "log_every=1", "data.batch_real=32", "eval.models=1",
                "eval.epochs=20"], ["condense", "--method", "dm"], "synthetic.safetensors", 0),
        "fds": (["train", "fds"], ["outer_steps=4", "inner_epochs=1", "checkpoint_every=1"], ["train", "fds"],
                "model.safetensors", 0),
    }


def _lines(run_dir: Path) -> list[dict]:
    """The complete lines of metrics.jsonl (a line being written is not one yet)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().split("\n")[:-1] if ln.strip()]


def history(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in line.items() if k != "time"} for line in _lines(run_dir)]


class Child:
    """A run in its own process: a fork of this one calling the CLI, or `python -m toolbox ARGS`.
    ``prepare``: Python source the child runs first."""

    def __init__(self, args: list[str], log: Path, fork: bool, prepare: str = ""):
        self.log = log
        self.status = None
        # a fork copies only the calling thread: with another thread alive (one holding a lock, say)
        # the child could hang, so start a fresh interpreter then
        if not fork or threading.active_count() > 1:
            command = ["-m", "toolbox"] if not prepare else \
                ["-c", prepare + "\nfrom toolbox.cli import cli\ncli.main(args=sys.argv[1:], prog_name='toolbox')"]
            with open(log, "w") as out:
                self.proc = subprocess.Popen([sys.executable, *command, *args], stdout=out, stderr=subprocess.STDOUT,
                                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
            self.pid = self.proc.pid
            return
        self.proc = None
        self.pid = os.fork()
        if self.pid == 0:  # the child: run the command and leave without this test process's cleanup
            code = 1
            try:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                exec(prepare, {})
                cli.main(args=args, prog_name="toolbox", standalone_mode=False)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)

    def poll(self):
        """None while running, else the exit code (negative: killed by that signal)."""
        if self.proc is not None:
            return self.proc.poll()
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return self.status

    def kill_and_wait(self) -> int:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            return self.proc.wait(timeout=60)
        while self.poll() is None:
            time.sleep(0.005)
        return self.status

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def kill_at_random(args: list[str], run_dir: Path, rng: random.Random, reference: list[dict], tail: int,
                   fork: bool) -> dict:
    """Start the run; once its first checkpoint exists, SIGKILL it at a random moment before it finishes:
    when it has written a random number of metrics lines, plus a random fraction (< 1/2) of the time the
    uninterrupted run (``reference``, its lines) took to write the next one."""
    child = Child(args, run_dir.parent / f"{run_dir.name}.log", fork)
    checkpoint = run_dir / runs.CHECKPOINT
    deadline = time.time() + 120
    try:
        while not checkpoint.exists():
            assert child.poll() is None, f"run ended before its first checkpoint:\n{child.output()}"
            assert time.time() < deadline, "no checkpoint after 120 s"
            time.sleep(0.002)
        target = rng.randint(len(_lines(run_dir)), len(reference) - 1 - tail)
        delay = rng.uniform(0, 0.5) * (reference[target]["time"] - reference[target - 1]["time"])
        while len(_lines(run_dir)) < target:
            assert child.poll() is None, f"run finished before the kill:\n{child.output()}"
            time.sleep(0.002)
        time.sleep(delay)
    finally:
        code = child.kill_and_wait()
    assert code == -signal.SIGKILL, f"run ended with {code} before the kill:\n{child.output()}"
    assert not (run_dir / "summary.json").exists()
    return {"target": target, "delay": delay, "lines": len(_lines(run_dir))}


def assert_same_run(a: Path, b: Path, weights: str) -> None:
    assert json.loads((b / "summary.json").read_text()) == json.loads((a / "summary.json").read_text())
    assert history(b) == history(a)  # every step exactly once, with the same values
    steps = [h["step"] for h in history(b)]
    assert steps == sorted(steps)
    wa, wb = load_file(str(a / weights)), load_file(str(b / weights))
    assert wa.keys() == wb.keys()
    assert all(wa[k].dtype == wb[k].dtype and torch.equal(wa[k], wb[k]) for k in wa), \
        [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert json.loads((b / "run.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("name", ["supervised", "supervised-stream", "sam", "kd", "zskt", "dc", "dm", "fds"])
def test_kill_9_at_a_random_moment_then_resume_is_bit_identical(name, tmp_path, request):
    teacher = request.getfixturevalue("digits_teacher") if name in NEEDS_TEACHER else None
    command, overrides, resume, weights, tail = _cases(teacher)[name]
    args = [*command, *(x for o in overrides for x in ("-o", o))]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    cli_run = CliRunner()
    result = cli_run.invoke(cli, [*args, "--out", str(straight), *CPU])
    assert result.exit_code == 0, result.output

    rng = random.Random(zlib.crc32(name.encode()))
    kill_at_random([*args, "--out", str(killed), *CPU], killed, rng, _lines(straight), tail, fork=not name.startswith("supervised"))
    assert json.loads((killed / "run.json").read_text())["status"] == "running"  # what kill -9 leaves

    result = cli_run.invoke(cli, [*resume, "--resume", str(killed), *CPU])
    assert result.exit_code == 0, result.output
    assert_same_run(straight, killed, weights)


def test_kill_9_before_the_first_checkpoint_then_resume_starts_over_cleanly(tmp_path):
    args = ["train", "supervised", "-o", "model.arch=mlp", "-o", "epochs=6", "-o", "checkpoint_every=4"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert CliRunner().invoke(cli, [*args, "--out", str(straight), *CPU]).exit_code == 0
    child = Child([*args, "--out", str(killed), *CPU], tmp_path / "killed.log", fork=True)
    try:
        while len(_lines(killed)) < 2:
            assert child.poll() is None, child.output()
            time.sleep(0.002)
    finally:
        assert child.kill_and_wait() == -signal.SIGKILL
    assert not (killed / runs.CHECKPOINT).exists()
    result = CliRunner().invoke(cli, ["train", "supervised", "--resume", str(killed), *CPU])
    assert result.exit_code == 0, result.output
    assert_same_run(straight, killed, "model.safetensors")


DIE_IN_THIRD_CHECKPOINT = """
import os, signal, sys
from pathlib import Path
import safetensors.torch

real, calls = safetensors.torch.save_file, []

def save_file(tensors, filename, metadata=None):
    # the third checkpoint write stops half way through its temporary file
    if "state.safetensors" in str(filename):
        calls.append(filename)
        if len(calls) == 3:
            real(tensors, filename, metadata=metadata)
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    return real(tensors, filename, metadata=metadata)

safetensors.torch.save_file = save_file
"""


def test_kill_9_during_a_checkpoint_write_then_resume_is_bit_identical(tmp_path):
    """The half-written checkpoint never replaces the last complete one (atomic write)."""
    args = ["train", "sam", "-o", "epochs=5", "-o", "checkpoint_every=1"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert CliRunner().invoke(cli, [*args, "--out", str(straight), *CPU]).exit_code == 0
    child = Child([*args, "--out", str(killed), *CPU], tmp_path / "killed.log", fork=True,
                  prepare=DIE_IN_THIRD_CHECKPOINT)
    deadline = time.time() + 120
    while child.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert child.kill_and_wait() == -signal.SIGKILL, child.output()
    assert len(_lines(killed)) == 3  # epoch 3 logged, its checkpoint half written
    from toolbox.state import load_state

    assert load_state(killed / runs.CHECKPOINT)["step"] == 2
    result = CliRunner().invoke(cli, ["train", "sam", "--resume", str(killed), *CPU])
    assert result.exit_code == 0, result.output
    assert_same_run(straight, killed, "model.safetensors")
