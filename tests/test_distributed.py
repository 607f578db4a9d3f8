"""One run on two ranks (gloo, started by `--nproc 2` through torch's elastic launcher): the same step as
one process on the same global batch, the same accuracy, rank 0 alone writing, one line when a rank
dies, and --resume finishing the run as if it had not been interrupted."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from toolbox import runs

CPU = ["--threads", "1", "--device", "cpu"]


def toolbox(*args, env=None, timeout=300):
    """The toolbox command in a new process (ranks are processes: CliRunner cannot host them)."""
    return subprocess.run([sys.executable, "-m", "toolbox", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_one_step_on_two_ranks_equals_one_process_on_the_same_global_batch(tmp_path):
    # the whole training split as one batch: one optimiser step per run, a global batch of 1347 images
    # that 2 ranks split 673 + 674 (uneven: the loss weighting must make the mean come out right)
    one = ["train", "supervised", "--arch", "mlp", "--epochs", "1", "-o", "data.batch_size=4096", *CPU]
    single = toolbox(*one, "--out", tmp_path / "one")
    assert single.returncode == 0, single.stderr
    pair = toolbox(*one, "--out", tmp_path / "two", "--nproc", "2")
    assert pair.returncode == 0, pair.stderr
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    # and the step moved the weights by far more than that tolerance
    assert toolbox(*one, "--out", tmp_path / "still", "-o", "optim.lr=1e-9").returncode == 0
    still = load_file(str(tmp_path / "still" / "model.safetensors"))
    assert max(float((a[k] - still[k]).abs().max()) for k in a) > 1e-3
    first = json.loads((tmp_path / "one" / "metrics.jsonl").read_text().splitlines()[0])
    second = json.loads((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()[0])
    assert second["train_loss"] == pytest.approx(first["train_loss"], rel=1e-6)
    info = json.loads((tmp_path / "two" / "run.json").read_text())
    assert info["world_size"] == 2 and [r["rank"] for r in info["records"]["ranks"]] == [0, 1]
    assert len({r["pid"] for r in info["records"]["ranks"]}) == 2
    # rank 0 alone printed: one summary, and nothing on stderr
    assert pair.stdout.count("train supervised: finished") == 1 and pair.stderr == ""


def test_supervised_digits_on_two_ranks_reaches_the_single_process_accuracy(tmp_path):
    # the digits teacher recipe (WRN-16-2, batch norm: each rank normalises its half of every batch)
    single = runs.cached_run("train", "supervised", device="cpu")
    expected = json.loads((single / "summary.json").read_text())["accuracy"]
    pair = toolbox("train", "supervised", "--out", tmp_path / "two", "--nproc", "2", *CPU)
    assert pair.returncode == 0, pair.stderr
    got = json.loads((tmp_path / "two" / "summary.json").read_text())["accuracy"]
    assert abs(got - expected) <= 0.01, (got, expected)


def _pid_of_rank(run_dir, rank: int, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            ranks = json.loads((run_dir / "run.json").read_text())["records"]["ranks"]
            return next(r["pid"] for r in ranks if r["rank"] == rank)
        except (OSError, ValueError, KeyError, StopIteration):
            time.sleep(0.2)
    raise AssertionError("the ranks were never recorded")


def test_a_killed_rank_ends_the_job_in_one_line_and_resume_finishes_it_exactly(tmp_path):
    args = ["train", "supervised", "--arch", "convnet", "--epochs", "3", "-o", "data.batch_size=128", "-o", "checkpoint_every=1",
            *CPU]
    whole = toolbox(*args, "--out", tmp_path / "whole", "--nproc", "2")
    assert whole.returncode == 0, whole.stderr

    cut = tmp_path / "cut"
    job = subprocess.Popen([sys.executable, "-m", "toolbox", *args, "--out", str(cut), "--nproc", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = _pid_of_rank(cut, 1)
    checkpoint = cut / runs.CHECKPOINT
    while not checkpoint.exists() and job.poll() is None:
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 1
    assert lines(err) == [f"error: rank 1 was killed by SIGKILL; the last checkpoint is kept: continue with "
                          f"toolbox train --resume {cut.resolve()} --nproc 2"], err
    assert json.loads((cut / "run.json").read_text())["status"] != "finished"

    # the checkpoint holds the state of the whole job, so one process may continue it too
    shutil.copytree(cut, tmp_path / "cut-alone")
    alone = toolbox("train", "--resume", tmp_path / "cut-alone", *CPU)
    assert alone.returncode == 0, alone.stderr
    whole_accuracy = json.loads((tmp_path / "whole" / "summary.json").read_text())["accuracy"]
    assert abs(json.loads((tmp_path / "cut-alone" / "summary.json").read_text())["accuracy"] - whole_accuracy) <= 0.01

    resumed = toolbox("train", "--resume", cut, "--nproc", "2", *CPU)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((cut / "summary.json").read_text()) == json.loads((tmp_path / "whole" / "summary.json").read_text())
    rows = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [(r["train_loss"], r["accuracy"]) for r in rows] == [(r["train_loss"], r["accuracy"]) for r in expected]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_started_with_different_recipes_are_refused_at_start(tmp_path):
    # started by hand as torchrun would (its environment variables), rank 1 with another seed
    port = _free_port()
    jobs = []
    for rank, seed in ((0, 0), (1, 1)):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        jobs.append(subprocess.Popen([sys.executable, "-m", "toolbox", "train", "supervised", "--arch", "mlp",
                                      "--epochs", "1", "--seed", str(seed), "--out", str(tmp_path / "run"), *CPU],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outs = [j.communicate(timeout=120) for j in jobs]
    assert jobs[0].returncode == 2
    assert lines(outs[0][1]) == ["error: rank(s) 1 started with a different recipe than rank 0; start every rank "
                                 "with the same command and the same installed toolbox and plugins"]
    assert jobs[1].returncode == 1 and outs[1][1] == ""  # rank 0 said it for both
    assert not (tmp_path / "run" / "run.json").exists()


def test_nproc_needs_a_command_line(tmp_path):
    from click.testing import CliRunner

    from toolbox.cli import cli

    result = CliRunner().invoke(cli, ["train", "supervised", "--arch", "mlp", "--nproc", "2", "--out",
                                      str(tmp_path / "r"), *CPU])
    assert result.exit_code == 2
    assert lines(result.stderr) == ["error: --nproc starts the command again as several processes and needs the "
                                    "real command line; run it from a shell (or start the ranks yourself with "
                                    "torchrun -m toolbox ...)"]
