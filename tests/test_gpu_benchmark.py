"""benchmarks/gpu.py: on a machine without CUDA one line and exit 0; its CPU smoke mode runs every case
(engine, ZSKT game, DC/DSA loop and vmap, evaluator) at tiny sizes, so the CUDA path's code stays in step
with the APIs it calls."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"


def _run(*args):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0():
    done = _run()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and "no GPU is present" in lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real benchmark")
def test_cpu_smoke_runs_every_case_and_ends_with_the_dc_speedup():
    done = _run("--cpu-smoke")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for case in ("supervised", "ZSKT iteration", "DC outer step", "DSA outer step", "evaluator"):
        assert any(line.startswith(case) for line in lines), (case, done.stdout)
    assert lines[-1].startswith("speedup: ") and float(lines[-1].split()[1]) > 0
