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
    return [f"teacher.source={teacher}", "student.arch=wrn-10-1", "batch_size=48", "student_steps=2",
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
    """Only batch norm over half batches differs from one process; measured 2-3 % on the first iteration."""
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
