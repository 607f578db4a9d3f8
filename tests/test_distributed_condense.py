"""Condensation on two ranks (gloo, started by `--nproc 2` through torch's elastic launcher): the classes
split between the ranks make the synthetic set one process makes, the evaluator's models split between
them give the accuracies one process gives, a 2-rank checkpoint resumes on 2 ranks and on 1, and rank 0
alone writes and prints."""

import functools
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from toolbox.runs import CHECKPOINT
from toolbox.state import load_state

CPU = ["--threads", "1", "--device", "cpu"]
# few iterations and a tiny evaluation: the equality is what is tested, not the accuracy
SHORT = ["-o", "iterations=3", "-o", "eval.models=2", "-o", "eval.epochs=2", "-o", "checkpoint_every=1",
         "-o", "log_every=1"]


def toolbox(*args, timeout=300):
    """The toolbox command in a new process (ranks are processes: CliRunner cannot host them)."""
    return subprocess.run([sys.executable, "-m", "toolbox", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TOOLBOX_NO_PROGRESS": "1"})


def condense(out, *args, nproc=1):
    done = toolbox("condense", "digits", *args, *SHORT, "--out", out, *CPU, *(["--nproc", nproc] if nproc > 1 else []))
    assert done.returncode == 0, done.stderr
    return done


def images(run):
    return load_file(str(run / "synthetic.safetensors"))["images"]


def history(run):
    return [{k: v for k, v in json.loads(line).items() if k != "time"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dc_runs(tmp_path_factory):
    """DC ipc 1 on digits, the same seed, as one process and as two ranks."""
    base = tmp_path_factory.mktemp("dc")
    single = condense(base / "one", "--method", "dc")
    pair = condense(base / "two", "--method", "dc", nproc=2)
    return base / "one", base / "two", single, pair


def test_dc_on_two_ranks_makes_the_single_process_set(dc_runs):
    one, two, _, pair = dc_runs
    assert torch.allclose(images(one), images(two), atol=1e-5, rtol=0)
    # rank 0's checkpoint is one process's: the whole set, the whole momentum, the same generator states
    saved = {run: load_state(run / CHECKPOINT) for run in (one, two)}
    assert saved[two]["step"] == saved[one]["step"] == 2
    momentum = saved[two]["state"]["optimizer"]["state"][0]["momentum_buffer"]
    assert momentum.flatten(1).abs().sum(1).gt(0).all()  # every class's, not only rank 0's classes
    assert torch.allclose(momentum, saved[one]["state"]["optimizer"]["state"][0]["momentum_buffer"], atol=1e-5, rtol=0)
    assert torch.allclose(saved[two]["state"]["images"], saved[one]["state"]["images"], atol=1e-5, rtol=0)
    generators = [saved[run]["rng"]["generators"] for run in (one, two)]
    assert generators[0].keys() == generators[1].keys()
    assert all(torch.equal(generators[0][k], generators[1][k]) for k in generators[0])
    # the loss is the all-reduced sum over both ranks' classes, the accuracy the gathered models'
    assert [h.get("loss") for h in history(two)] == pytest.approx([h.get("loss") for h in history(one)], rel=1e-9)
    assert [h.get("accuracy") for h in history(two)] == [h.get("accuracy") for h in history(one)]
    info = json.loads((two / "run.json").read_text())
    assert info["world_size"] == 2 and info["status"] == "finished"
    # rank 0 alone printed the summary, and no rank wrote to stderr
    assert pair.stdout.count("evaluate it: toolbox evaluate") == 1 and pair.stderr == ""
    assert (two / "README.md").exists() and (two / "images" / "synthetic.png").exists()


def _interrupted_copy(run, to):
    """``run`` as a kill after its step-2 checkpoint leaves it: status running, no final files, the
    checkpoint rank 0 wrote; metrics.jsonl lines after step 2 are dropped by the resume itself."""
    shutil.copytree(run, to)
    for name in ("summary.json", "synthetic.safetensors", "README.md", "config.json"):
        (to / name).unlink(missing_ok=True)
    shutil.rmtree(to / "images", ignore_errors=True)
    info = json.loads((to / "run.json").read_text())
    (to / "run.json").write_text(json.dumps({**info, "status": "running"}))
    return to


@pytest.mark.parametrize("nproc", [2, 1])
def test_a_two_rank_checkpoint_resumes_to_the_same_set(dc_runs, tmp_path, nproc):
    # rank 0's checkpoint holds the whole set and the whole momentum: 2 ranks or 1 continue it alike
    one, two, _, _ = dc_runs
    cut = _interrupted_copy(two, tmp_path / "cut")
    assert load_state(cut / CHECKPOINT)["step"] == 2
    done = toolbox("condense", "--resume", cut, *CPU, *(["--nproc", nproc] if nproc > 1 else []))
    assert done.returncode == 0, done.stderr
    assert torch.allclose(images(cut), images(one), atol=1e-5, rtol=0)
    assert history(cut) == history(two)
    # it continued from the checkpoint rather than starting over: the lines of steps 1 and 2 are the
    # interrupted run's own, written when it ran (a run started over writes them again, at other times)
    kept = [line for line in (two / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= 2]
    assert len(kept) == 2 and (cut / "metrics.jsonl").read_text().splitlines()[:2] == kept


def test_evaluate_spreads_ten_models_over_two_ranks(dc_runs):
    one = dc_runs[0]
    args = ["evaluate", one, "--json", "--models", "10", "--epochs", "2", "--baselines", "random", *CPU]
    single = toolbox(*args)
    pair = toolbox(*args, "--nproc", "2")
    assert single.returncode == 0 and pair.returncode == 0, (single.stderr, pair.stderr)
    a, b = json.loads(single.stdout), json.loads(pair.stdout)  # one JSON object: rank 0 alone printed
    assert len(a["accuracies"]) == 10 and b["accuracies"] == a["accuracies"]
    assert b["metrics"] == a["metrics"]
    assert b["baselines"]["random"]["accuracies"] == a["baselines"]["random"]["accuracies"]
    assert len(set(a["accuracies"])) > 1  # the models differ: model order matters in the comparison
    assert pair.stderr == ""


@pytest.mark.parametrize("method", ["dsa", "dm"])
def test_dsa_and_dm_on_two_ranks_make_the_single_process_set(tmp_path, method):
    one, two = tmp_path / "one", tmp_path / "two"
    condense(one, "--method", method)
    condense(two, "--method", method, nproc=2)
    # every class's augmentation and real batch is drawn on both ranks in class order, and each class's
    # step is its owner's: the images are bit for bit one process's
    assert torch.equal(images(one), images(two))
    # DC/DSA sum float32 class terms in float64, exactly in any order; DM's single-process loss is one
    # float32 sum over all classes, which the ranks' two partial sums round differently (measured 1e-7)
    tolerance = 1e-9 if method == "dsa" else 1e-6
    assert [h.get("loss") for h in history(two)] == pytest.approx([h.get("loss") for h in history(one)], rel=tolerance)
    assert [h.get("accuracy") for h in history(two)] == [h.get("accuracy") for h in history(one)]


def test_dm_with_batch_norm_on_two_ranks_is_one_line(tmp_path):
    done = toolbox("condense", "digits", "--method", "dm", "-o", "model.arch=convnet-bn", *SHORT,
                   "--out", tmp_path / "run", *CPU, "--nproc", "2")
    assert done.returncode == 2
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "DM on several ranks needs a network that normalises each image on its own" in lines[0]


def test_more_ranks_than_classes_is_refused(monkeypatch):
    from toolbox_condense.condensation import check_ranks

    from toolbox import distributed
    from toolbox.data import load
    from toolbox.errors import UsageError

    monkeypatch.setattr(distributed, "world", lambda: 11)
    recipe = type("R", (), {"method": "dc"})()
    with pytest.raises(UsageError) as e:
        check_ranks(recipe, load("digits"), None)
    assert str(e.value) == ("11 ranks but digits has 10 classes, and condensation splits the classes between the "
                            "ranks; start at most 10 (--nproc 10)")


def _gradient(build, train_x, classes, families, batched, owned):
    """The images' gradient one match_step computes with ``owned`` classes (no process group: the sum
    over ranks is taken by the caller)."""
    from toolbox_condense import dc

    captured = []

    def capture(t):
        if t.dim():
            captured.append(t.clone())
        return t

    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    syn = train_x[:10].clone().view(10, 1, *train_x.shape[1:]).requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
    m = dc.Matcher(build, train_x, classes, 64, 1, 1, 0.01, 256, "ours", families, batched, *gens, owned)
    original = dc.distributed.all_sum
    dc.distributed.all_sum = capture
    try:
        dc.match_step(syn, opt, m)
    finally:
        dc.distributed.all_sum = original
    return captured[0]


@pytest.mark.parametrize("batched", [False, True], ids=["loop", "vmap"])
def test_the_ranks_class_gradients_add_up_to_the_single_process_gradient(batched):
    # in float64, so that the vmap path's batched kernels (which round differently for 5 classes than
    # for 10 in float32: measured 4e-5 relative, below the 3.5e-4 between its loop and vmap forms) compare exactly
    from toolbox_condense import augment
    from toolbox_condense.sampling import ClassIndex

    from toolbox.data import load
    from toolbox.models import build_for

    data = load("digits")
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        train_x = data.normalize(data.train_x).double()
        classes = ClassIndex(data.train_y, data.num_classes)
        build = functools.partial(build_for, "convnet", data.spec)
        families = augment.parse_strategy(augment.default_strategy("digits"))
        grad = functools.partial(_gradient, build, train_x, classes, families, batched)
        whole = grad(slice(None))
        first, second = grad(slice(0, 5)), grad(slice(5, 10))
    finally:
        torch.set_default_dtype(dtype)
    assert not first[5:].any() and not second[:5].any()  # a rank's gradient is its classes' alone
    assert torch.equal(first + second, whole)
