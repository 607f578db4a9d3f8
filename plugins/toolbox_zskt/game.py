"""One ZSKT iteration: a generator step that seeks student-teacher disagreement, then student steps.

The maths is the reference code's; the work is not. The reference regenerates x = G(z) with autograd
for every one of the 1 + 10 steps and runs the teacher with weight gradients. Here x is generated once
for the student steps and detached (the generator is not updated during them, so every regeneration
would give the same x), the teacher's outputs on it are computed once, and the teacher's weights get
no gradients. The generator step also skips the student's weight gradients, which it never uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from toolbox.losses import attention_loss, kl_mean


def student_loss(s_logits, s_feats, t_logits, t_feats, beta: float, temperature: float = 1.0):
    """KL(T || S) (mean over batch and classes) + beta * sum over groups of AT(s, t)."""
    at = sum(attention_loss(s.float(), t.float()) for s, t in zip(s_feats, t_feats))
    return kl_mean(s_logits.float(), t_logits.float(), temperature) + beta * at


def generator_loss(s_logits, t_logits, temperature: float = 1.0):
    """-KL(T || S): the generator looks for images on which the student disagrees with the teacher."""
    return -kl_mean(s_logits.float(), t_logits.float(), temperature)


@dataclass
class Game:
    generator: torch.nn.Module
    student: torch.nn.Module
    teacher: torch.nn.Module  # frozen (networks.freeze)
    opt_generator: torch.optim.Optimizer
    opt_student: torch.optim.Optimizer
    sched_generator: torch.optim.lr_scheduler.LRScheduler
    sched_student: torch.optim.lr_scheduler.LRScheduler
    beta: float = 250.0
    temperature: float = 1.0
    grad_clip: float = 5.0
    generator_steps: int = 1
    student_steps: int = 10
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    # forward passes, possibly torch.compile'd: (x) -> image batch / (logits, [group outputs])
    generate: Callable | None = None
    student_features: Callable | None = None
    teacher_features: Callable | None = None
    # the student's forward in the generator step, where its weights take no gradient. On several ranks
    # student_features is the student in DDP, whose reducer, once a forward under autograd ran, waits for
    # gradients of all its weights and fails at the next forward when they never come; this one is the
    # bare student (same weights on every rank), so nothing waits
    judge_features: Callable | None = None
    # factor on this rank's batch-mean losses before backward (toolbox.distributed.weight): DDP averages
    # the ranks' gradients, and weighted so that average is the gradient of the mean over the global batch
    weight: float = 1.0
    # fp16 gradients underflow unscaled: each loss is scaled before its backward pass and the gradients
    # unscaled before clipping (toolbox.speed.Resolved.grad_scaler); disabled scalers change nothing
    scaler_generator: torch.amp.GradScaler | None = None
    scaler_student: torch.amp.GradScaler | None = None

    def __post_init__(self):
        if self.scaler_generator is None:
            self.scaler_generator = torch.amp.GradScaler("cpu", enabled=False)
        if self.scaler_student is None:
            self.scaler_student = torch.amp.GradScaler("cpu", enabled=False)
        if self.generate is None:
            self.generate = self.generator
        if self.student_features is None:
            self.student_features = self.student.forward_features
        if self.teacher_features is None:
            self.teacher_features = self.teacher.forward_features
        if self.judge_features is None:
            self.judge_features = self.student_features

    def step(self, z) -> dict:
        """One iteration on noise z (the same z for the generator step and all student steps).
        Returns the last generator and student losses (tensors) and the images the student saw. On
        several ranks z is this rank's share of the global batch, and the losses are its share's means."""
        self.generator.train()
        self.student.train()  # also during the generator step: the student's BN statistics follow G's images
        self.student.requires_grad_(False)
        try:
            for _ in range(self.generator_steps):
                with self.autocast():
                    x = self.generate(z)
                    s_logits, _ = self.judge_features(x)
                    t_logits, _ = self.teacher_features(x)
                loss_g = generator_loss(s_logits, t_logits, self.temperature)
                self.opt_generator.zero_grad(set_to_none=True)
                self._update(loss_g, self.generator, self.opt_generator, self.scaler_generator)
        finally:
            self.student.requires_grad_(True)

        with torch.no_grad(), self.autocast():
            x = self.generate(z)
            t_logits, t_feats = self.teacher_features(x)
        for _ in range(self.student_steps):
            with self.autocast():
                s_logits, s_feats = self.student_features(x)
            loss_s = student_loss(s_logits, s_feats, t_logits, t_feats, self.beta, self.temperature)
            self.opt_student.zero_grad(set_to_none=True)
            self._update(loss_s, self.student, self.opt_student, self.scaler_student)

        self.sched_generator.step()
        self.sched_student.step()
        return {"loss_generator": loss_g.detach(), "loss_student": loss_s.detach(), "images": x}

    def _update(self, loss, network, optimizer, scaler) -> None:
        """Backward, clip the unscaled gradient norm, step (skipped by the scaler on inf/NaN gradients)."""
        if self.weight != 1.0:
            loss = loss * self.weight
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(network.parameters(), self.grad_clip)
        scaler.step(optimizer)
        scaler.update()

    def stateful(self) -> dict:
        """What a checkpoint holds, under the names it is saved and restored with; the scalers only when on."""
        parts = {"generator": self.generator, "student": self.student, "opt_generator": self.opt_generator,
                 "opt_student": self.opt_student, "sched_generator": self.sched_generator,
                 "sched_student": self.sched_student}
        if self.scaler_generator.is_enabled():
            parts["scaler_generator"] = self.scaler_generator
        if self.scaler_student.is_enabled():
            parts["scaler_student"] = self.scaler_student
        return parts
