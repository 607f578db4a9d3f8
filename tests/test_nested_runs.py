"""Work a run needs from another run (a default teacher) is announced in one line when it is made,
and its time is not the calling run's: metrics.jsonl's clock counts the run's own work only."""

import json
import time
from types import SimpleNamespace

import torch

from toolbox import runs

TINY = ["model.arch=mlp", "epochs=3"]


def _outer(tmp_path):
    d = tmp_path / "outer"
    d.mkdir()
    (d / "run.json").write_text("{}")
    return runs.Run(d, SimpleNamespace(seed=0), "kd", "distill", torch.device("cpu"))


def test_a_nested_run_is_announced_once_and_kept_off_the_callers_clock(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOOLBOX_HOME", str(tmp_path / "home"))
    outer = _outer(tmp_path)
    token = runs._CURRENT.set(outer)
    try:
        t0 = time.time()
        made = runs.cached_run("train", "supervised", overrides=TINY, device="cpu",
                               why="it is this run's default teacher", skip="--teacher RUN uses your own")
        nested_seconds = time.time() - t0
        outer.log(1, loss=0.5)
        announced = capsys.readouterr().err.splitlines()
        again = runs.cached_run("train", "supervised", overrides=TINY, device="cpu")
    finally:
        runs._CURRENT.reset(token)
    assert again == made
    assert announced == [f"running `toolbox train supervised -o model.arch=mlp -o epochs=3` once, cached in {made} "
                         "for later runs; it is this run's default teacher; --teacher RUN uses your own"]
    assert capsys.readouterr().err == ""  # reused without a word: run.json records the source
    logged = json.loads((outer.dir / "metrics.jsonl").read_text())["time"]
    assert nested_seconds > 0.5 and logged < 0.2 * nested_seconds, (logged, nested_seconds)
