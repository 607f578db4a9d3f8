"""ZSKT, KD (and few-shot KD+AT) and SAM on two ranks (gloo on the CPU, started by ``--nproc 2``): each
equals what one process computes on the same global batch, up to what differs on purpose.

Batch norm in train mode normalises over the batch a forward sees. On the CPU there is no SyncBatchNorm,
so on two ranks each normalises its own half, and a network with batch norm (ZSKT's generator, the WRN
students) cannot equal a plain one-process run. ZSKT is therefore compared exactly with a one-process
transcription of what two ranks must compute (every forward on each half apart, the gradients
averaged as DDP does), and only loosely with the plain run; SAM is compared exactly on an MLP.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from toolbox_zskt.game import Game, generator_loss, student_loss

from toolbox import runs
from toolbox.errors import RunError

pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")


def _two_ranks(verb: str, method: str, recipe: str, overrides: list[str], out) -> dict:
    """Run the command as 2 ranks through --nproc (a fresh process: --nproc relaunches its command line)."""
    args = [sys.executable, "-m", "toolbox", verb, *([method] if method else []), *(["--recipe", recipe] if recipe else []),
            *[a for o in overrides for a in ("-o", o)], "--out", str(out), "--nproc", "2", "--threads", "1",
            "--device", "cpu"]
    return _launch(args)


def _launch(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _lines(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _losses(run_dir, *names: str) -> list[list[float]]:
    return [[x[n] for n in names] for x in _lines(run_dir) if names[0] in x]


def _parameters(run_dir) -> dict:
    """The saved model's weights without batch-norm running statistics (which the ranks do not share)."""
    return {k: v for k, v in load_file(run_dir / "model.safetensors").items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A small WRN digits teacher, quick to train: these tests compare runs, not how good they get."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    run_dir, _ = runs.execute("train", "supervised", "supervised/digits", ["model.arch=wrn-10-1", "epochs=3"],
                              out=out, device="cpu")
    return run_dir


# --- ZSKT --------------------------------------------------------------------------------------


def _step_in_two_halves(self, z):
    """One ZSKT iteration as two ranks without SyncBatchNorm compute it, in one process: every forward
    runs on each half of z apart (batch-norm statistics of that half, the same weights), and each loss is
    the halves' means weighted by their sizes, whose gradient is DDP's average of the ranks' gradients."""
    halves = (z[:len(z) // 2], z[len(z) // 2:])
    shares = [len(h) / len(z) for h in halves]
    self.generator.train()
    self.student.train()
    self.student.requires_grad_(False)
    for _ in range(self.generator_steps):
        loss_g = 0
        for share, h in zip(shares, halves):
            x = self.generator(h)
            loss_g = loss_g + share * generator_loss(self.student.forward_features(x)[0],
                                                     self.teacher.forward_features(x)[0], self.temperature)
        self.opt_generator.zero_grad(set_to_none=True)
        loss_g.backward()
        torch.nn.utils.clip_grad_norm_(self.generator.parameters(), self.grad_clip)
        self.opt_generator.step()
    self.student.requires_grad_(True)
    with torch.no_grad():
        xs = [self.generator(h) for h in halves]
        targets = [self.teacher.forward_features(x) for x in xs]
    for _ in range(self.student_steps):
        loss_s = 0
        for share, x, (t_logits, t_feats) in zip(shares, xs, targets):
            s_logits, s_feats = self.student.forward_features(x)
            loss_s = loss_s + share * student_loss(s_logits, s_feats, t_logits, t_feats, self.beta, self.temperature)
        self.opt_student.zero_grad(set_to_none=True)
        loss_s.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.grad_clip)
        self.opt_student.step()
    self.sched_generator.step()
    self.sched_student.step()
    return {"loss_generator": loss_g.detach(), "loss_student": loss_s.detach(), "images": torch.cat(xs)}


def _zskt_overrides(teacher, *more):
    # an odd batch: the ranks' shares differ (23 and 24 of 47), so each rank's loss weight is not 1
    return [f"teacher.source={teacher}", "student.arch=wrn-10-1", "batch_size=47", "student_steps=2",
            "eval_every=1", "sample_every=2", *more]


@pytest.fixture(scope="module")
def zskt_runs(teacher, tmp_path_factory):
    """The same 3-iteration ZSKT recipe on 2 ranks, in its 2-rank transcription and in one plain process."""
    root = tmp_path_factory.mktemp("zskt")
    overrides = _zskt_overrides(teacher, "iterations=3")
    _two_ranks("train", "zskt", "zskt/digits", overrides, root / "ranks")
    plain, _ = runs.execute("train", "zskt", "zskt/digits", overrides, out=root / "plain", device="cpu")
    mp = pytest.MonkeyPatch()
    mp.setattr(Game, "step", _step_in_two_halves)
    try:
        halves, _ = runs.execute("train", "zskt", "zskt/digits", overrides, out=root / "halves", device="cpu")
    finally:
        mp.undo()
    return root / "ranks", halves, plain


def test_zskt_on_two_ranks_equals_its_one_process_transcription(zskt_runs):
    ranks, halves, _ = zskt_runs
    names = ("loss_generator", "loss_student")
    got, want = _losses(ranks, *names), _losses(halves, *names)
    assert len(got) == 3
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=1e-6)
    got_w, want_w = _parameters(ranks), _parameters(halves)
    assert got_w.keys() == want_w.keys()
    for k in got_w:
        torch.testing.assert_close(got_w[k], want_w[k], rtol=1e-4, atol=1e-5, msg=k)
    records = json.loads((ranks / "run.json").read_text())["records"]
    assert records["world_size"] == 2 and records["sync_bn"] is False
    # rank 0 alone wrote: one line per iteration, and the samples of the whole global batch
    assert [x["step"] for x in _lines(ranks) if "accuracy" in x] == [1, 2, 3]
    assert (ranks / "images" / "samples-0000002.png").is_file() and (ranks / "images" / "samples.png").is_file()


def test_zskt_on_two_ranks_stays_near_the_plain_one_process_run(zskt_runs):
    """Only batch norm over half batches differs from one process: on the first iteration measured 0.6 %
    (generator loss) and 4.3 % (student loss) apart, up to 8.5 % by the third."""
    ranks, _, plain = zskt_runs
    got = torch.tensor(_losses(ranks, "loss_generator", "loss_student")[0])
    want = torch.tensor(_losses(plain, "loss_generator", "loss_student")[0])
    assert ((got - want).abs() / want.abs()).max() < 0.1, (got, want)


def test_zskt_resumes_on_two_ranks_from_a_one_process_checkpoint(zskt_runs, teacher, tmp_path, monkeypatch):
    """The z stream every rank draws whole is the checkpointed state: a run checkpointed by one process
    (the transcription) continues on two ranks exactly as it would have gone on."""
    _, halves, _ = zskt_runs
    calls = []

    def dies_after_the_checkpoint_at_2(self, z):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return _step_in_two_halves(self, z)

    monkeypatch.setattr(Game, "step", dies_after_the_checkpoint_at_2)
    with pytest.raises(RunError, match="--resume"):
        runs.execute("train", "zskt", "zskt/digits", _zskt_overrides(teacher, "iterations=3", "checkpoint_every=2"),
                     out=tmp_path / "run", device="cpu")
    _launch([sys.executable, "-m", "toolbox", "train", "--resume", str(tmp_path / "run"), "--nproc", "2",
             "--threads", "1", "--device", "cpu"])
    names = ("loss_generator", "loss_student")
    torch.testing.assert_close(torch.tensor(_losses(tmp_path / "run", *names)),
                               torch.tensor(_losses(halves, *names)), rtol=1e-5, atol=1e-6)


# --- KD, few-shot KD+AT, SAM (on the engine) ----------------------------------------------------


def test_a_ranks_augmentation_is_its_rows_of_the_whole_batchs():
    from toolbox.augment import random_crop_flip

    x = torch.arange(5 * 2 * 4 * 4, dtype=torch.float32).reshape(5, 2, 4, 4)
    whole = torch.Generator().manual_seed(7)
    want = random_crop_flip(x, 1, True, whole)
    for rows in (slice(0, 2), slice(2, 5)):
        g = torch.Generator().manual_seed(7)
        assert torch.equal(random_crop_flip(x[rows], 1, True, g, (rows, 5)), want[rows])
        assert torch.equal(g.get_state(), whole.get_state())  # the stream moves on as in one process


def _summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize("recipe, overrides", [
    ("kd/digits", ["schedule.epochs=2", "schedule.milestones=[1]"]),
    # 5 shots a class (one 50-image batch, 25 a rank), one-pixel crops, the schedule scaled by the shots as
    # the recipe does: 172 steps, the fewest after which the accuracy (93 %) no longer moves by points
    ("kd/digits-kdat-m5", ["schedule.epochs=6", "schedule.milestones=[3,5]"]),
], ids=["kd", "few-shot-kdat"])
def test_kd_on_two_ranks_reaches_the_one_process_accuracy(teacher, tmp_path, recipe, overrides):
    overrides = [f"teacher.source={teacher}", "student.arch=wrn-10-1", *overrides]
    _two_ranks("distill", "kd", recipe, overrides, tmp_path / "ranks")
    one, _ = runs.execute("distill", "kd", recipe, overrides, out=tmp_path / "one", device="cpu")
    ranks, plain = _summary(tmp_path / "ranks"), _summary(one)
    assert abs(ranks["accuracy"] - plain["accuracy"]) <= 0.02, (ranks, plain)
    # the teacher is the same on both ranks and untouched by training: it scores as in one process
    assert ranks["teacher_accuracy"] == plain["teacher_accuracy"]
    info = json.loads((tmp_path / "ranks" / "run.json").read_text())["records"]
    assert info["world_size"] == 2
    assert info.get("shots") == json.loads((one / "run.json").read_text())["records"].get("shots")


def test_sam_on_two_ranks_equals_one_process(tmp_path):
    """SAM ascends along the gradient all ranks share (DDP's all-reduced one): on a net without batch norm
    an epoch on two ranks ends at the weights one process reaches."""
    overrides = ["epochs=1", "eval_every=1"]
    _two_ranks("train", "sam", "sam/digits", overrides, tmp_path / "ranks")
    one, _ = runs.execute("train", "sam", "sam/digits", overrides, out=tmp_path / "one", device="cpu")
    assert _lines(tmp_path / "ranks")[0]["train_loss"] == pytest.approx(_lines(one)[0]["train_loss"], rel=1e-6)
    got, want = load_file(tmp_path / "ranks" / "model.safetensors"), load_file(one / "model.safetensors")
    assert got.keys() == want.keys()
    for k in got:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6, msg=k)


def test_kd_on_two_ranks_equals_one_process_for_a_student_without_batch_norm(teacher, tmp_path):
    """The teacher (batch norm, eval mode) replicated, each rank its rows of every batch and of its
    random crops and flips: with an MLP student an epoch on two ranks is one process's epoch."""
    overrides = [f"teacher.source={teacher}", "student.arch=mlp", "schedule.epochs=1", "schedule.milestones=[]",
                 "data.augment=crop_flip", "data.crop_padding=1"]
    _two_ranks("distill", "kd", "kd/digits", overrides, tmp_path / "ranks")
    one, _ = runs.execute("distill", "kd", "kd/digits", overrides, out=tmp_path / "one", device="cpu")
    assert _lines(tmp_path / "ranks")[0]["train_loss"] == pytest.approx(_lines(one)[0]["train_loss"], rel=1e-6)
    got, want = load_file(tmp_path / "ranks" / "model.safetensors"), load_file(one / "model.safetensors")
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6, msg=k)


def test_a_last_batch_smaller_than_the_world_is_one_line_usage_error(tmp_path):
    """1352 digits in batches of 1351 leave 1 for the last: one rank would get none (and a NaN loss)."""
    args = [sys.executable, "-m", "toolbox", "train", "supervised", "--arch", "mlp", "-o", "data.batch_size=1351",
            "--out", str(tmp_path / "run"), "--nproc", "2", "--threads", "1", "--device", "cpu"]
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "fewer than the 2 ranks" in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
