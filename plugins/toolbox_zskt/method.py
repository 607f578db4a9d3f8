"""A ZSKT run: set up teacher, student and generator, play the game, evaluate, checkpoint, save.

The student never reads the dataset's training split: only the test split is used, to measure it.

On several ranks (torchrun, ``--nproc``) the generator and the student are in DDP and the teacher, frozen
and in eval mode, is replicated: each rank plays the game on its share of every batch of noise, and
rank 0 evaluates and writes samples, checkpoints and the model.
"""

from __future__ import annotations

import torch

from toolbox import data, distributed
from toolbox.errors import UsageError
from toolbox.evaluation import accuracy, predict
from toolbox.models import build_for
from toolbox.speed import resolve
from toolbox.teachers import load_teacher, teacher_record

from .game import Game
from .generator import Generator
from .networks import check_pair

READ_EVERY = 50  # iterations between host reads of the losses when nothing else needs them

PAPER = "Micaelli & Storkey, Zero-shot Knowledge Transfer via Adversarial Belief Matching, NeurIPS 2019 (arXiv:1905.09768)"


def _cosine(optimizer, total: int):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=0.0)


def prediction_health(student, test_x, test_y, teacher, num_classes: int, device) -> dict:
    """Final accuracy, agreement with the teacher, and whether the student collapsed: a student that
    (almost) always predicts one class, or sits near chance, means the adversarial game failed."""
    s_pred = predict(student, test_x, device=device).argmax(1)
    t_pred = predict(teacher, test_x, device=device).argmax(1)
    acc = (s_pred == test_y).float().mean().item()
    dominant = torch.bincount(s_pred, minlength=num_classes).max().item() / len(s_pred)
    collapsed = dominant >= 0.5 or acc < 2.0 / num_classes
    out = {"accuracy": acc, "teacher_accuracy": (t_pred == test_y).float().mean().item(),
           "agreement": (s_pred == t_pred).float().mean().item(), "dominant_class_fraction": dominant,
           "collapsed": collapsed}
    if collapsed:
        out["warning"] = (f"the student collapsed: {dominant:.0%} of test images get one class and accuracy is {acc:.1%} "
                          f"(chance {1 / num_classes:.0%}); the adversarial game failed, try a lower learning rate or "
                          "more iterations")
    return out


def train_zskt(recipe, run) -> dict:
    device = run.device
    real = data.load(recipe.data.dataset)
    spec = real.spec
    teacher_loaded = load_teacher(recipe.teacher.source, recipe.teacher.recipe, device)
    teacher = teacher_loaded.model
    _check_teacher_dataset(teacher_loaded.config, spec)
    student = build_for(recipe.student.arch, spec, **recipe.student.kwargs).to(device)
    check_pair(teacher, student, spec.shape, teacher_loaded.config["architecture"], recipe.student.arch)
    c, _, w = spec.shape
    generator = Generator(recipe.generator.z_dim, out_channels=c, image_size=w).to(device)
    teacher_info = teacher_record(teacher_loaded, recipe.teacher.source, recipe.teacher.recipe)
    speed = resolve(recipe.speed, device)
    run.record(teacher=teacher_info, speed=speed.record())

    n = recipe.iterations
    opt_g = torch.optim.Adam(generator.parameters(), lr=recipe.optim.generator_lr)
    opt_s = torch.optim.Adam(student.parameters(), lr=recipe.optim.student_lr)
    sched_g, sched_s = _cosine(opt_g, n), _cosine(opt_s, n)
    parallel = distributed.world() > 1
    if recipe.batch_size < distributed.world():
        raise UsageError(f"batch_size {recipe.batch_size} is smaller than the {distributed.world()} ranks: each rank plays on "
                         "its share of the batch and needs at least one image of it; raise batch_size or use fewer ranks")
    rows = distributed.share(recipe.batch_size)
    if parallel:
        run.record(world_size=distributed.world(), sync_bn=recipe.parallel.sync_bn)
    game = _game(recipe, speed, generator, student, teacher, opt_g, opt_s, sched_g, sched_s)
    if parallel:
        game.weight = distributed.weight(rows.stop - rows.start, recipe.batch_size)
    z_rng = run.generator("z", device)
    # everything that draws random numbers while being built exists: restore (generators last) right here
    start = run.restore(**game.stateful())
    test_x, test_y = real.normalize(real.test_x), real.test_y
    eval_every = recipe.eval_every or max(1, n // 100)
    sample_every = recipe.sample_every or max(1, n // 10)
    checkpoint_every = recipe.checkpoint_every or max(1, n // 10)
    out = None
    title = f"zskt {teacher_loaded.config['architecture']} -> {recipe.student.arch} on {spec.name}"
    pending: list = []  # (iteration, its two losses on the device): read in one host sync per window

    def read() -> list[float]:
        """The window's losses in one host read, each checked (naming its iteration); -> the last pair.
        On several ranks one all-reduce of the window first: each rank's share-mean, weighted, averages
        to the global batch's mean, the number one process would log."""
        stacked = torch.stack([pair for _, pair in pending])
        if parallel:
            stacked = distributed.all_mean(stacked * game.weight)
        values = stacked.tolist()
        for (i, _), (loss_g, loss_s) in zip(pending, values):
            run.check_finite(loss_g, i)
            run.check_finite(loss_s, i)
        pending.clear()
        return values[-1]

    with run.progress(n, title, start=start) as bar:
        for it in range(start, n):
            z = torch.randn(recipe.batch_size, recipe.generator.z_dim, generator=z_rng, device=device)
            # every rank draws the whole global batch from the same stream and keeps its share, rather
            # than drawing only its share from a stream of its own: the ranks together play on exactly
            # the noise one process would, and the stream's state (which rank 0 checkpoints) does not
            # depend on the world size, so a run resumes with any number of ranks. The draw costs a few
            # kB per iteration.
            out = game.step(z[rows] if parallel else z)
            pending.append((it, torch.stack([out["loss_generator"], out["loss_student"]])))
            done = it + 1
            shown = {}
            logged, sampled = done % eval_every == 0 or done == n, done % sample_every == 0 and done < n
            saved = done % checkpoint_every == 0 and done < n
            if logged or sampled or saved or len(pending) >= READ_EVERY:  # nothing non-finite gets logged or saved
                loss_g, loss_s = read()
            if logged:
                # rank 0 measures the student every rank holds; the others take its number
                acc = distributed.from_main(lambda: accuracy(student, test_x, test_y, device=device))
                shown = {"accuracy": acc, "loss_student": loss_s, "loss_generator": loss_g}
                run.log(done, **shown, lr_student=sched_s.get_last_lr()[0], lr_generator=sched_g.get_last_lr()[0])
            if sampled:
                _save_samples(run, f"samples-{done:07d}", _images(out, recipe.batch_size), teacher, spec, done)
            if saved and run.main:
                run.save_checkpoint({k: v.state_dict() for k, v in game.stateful().items()}, done)
            bar.update(1, **shown)
    if out is not None:
        _save_samples(run, "samples", _images(out, recipe.batch_size), teacher, spec, n)

    final = distributed.from_main(lambda: prediction_health(student, test_x, test_y, teacher, spec.num_classes, device))
    if final["collapsed"]:
        run.log(n, warning=final["warning"])
        if run.main:  # once, not once per rank
            _warn(final["warning"])
    final["iterations"] = n
    run.save_model(student, arch=recipe.student.arch, arch_kwargs=recipe.student.kwargs, dataset=spec,
                   metrics={k: v for k, v in final.items() if isinstance(v, float)},
                   extra={"teacher": teacher_info,
                          "zskt": {"paper": PAPER, "iterations": n, "batch_size": recipe.batch_size,
                                   "student_steps": recipe.student_steps, "beta": recipe.loss.beta,
                                   "student_lr": recipe.optim.student_lr, "generator_lr": recipe.optim.generator_lr,
                                   "real_training_images_seen": 0}})
    return final


def _check_teacher_dataset(config: dict, spec) -> None:
    if config.get("dataset") != spec.name or tuple(config["input_shape"]) != tuple(spec.shape):
        raise UsageError(f"the teacher was trained on {config.get('dataset')} {config['input_shape']} but data.dataset is "
                         f"{spec.name} {list(spec.shape)}; use a teacher of this dataset or set data.dataset")
    if config["num_classes"] != spec.num_classes:
        raise UsageError(f"the teacher predicts {config['num_classes']} classes but {spec.name} has {spec.num_classes}")


def _images(out: dict, batch_size: int):
    """The first 64 images of the iteration's global batch (gathered from the ranks' shares: a
    collective, so every rank calls it)."""
    return distributed.all_gather_rows(out["images"], batch_size)[:64]


@torch.no_grad()
def _save_samples(run, name: str, images, teacher, spec, iteration: int) -> None:
    """The generator's images with the class the teacher sees in each and how sure it is: what the
    student is taught from, in the form a person can judge."""
    if not run.main:
        return
    probs = teacher(images.float()).float().softmax(-1)
    conf, label = probs.max(-1)
    labels = [f"{spec.class_name(int(c))} {p:.0%}" for c, p in zip(label.tolist(), conf.tolist())]
    run.save_images(name, images, mean=spec.mean, std=spec.std, labels=labels,
                    title=f"ZSKT generator samples after iteration {iteration}: the teacher's class and confidence "
                          "under each")


def _game(recipe, speed, generator, student, teacher, opt_g, opt_s, sched_g, sched_s) -> Game:
    """The game under the run's speed settings (toolbox.speed.Resolved): all three networks in its memory
    layout, their forward passes under its autocast and compiled when it says so, and a gradient scaler
    per optimiser (enabled for fp16 only: each network's loss has its own range).

    On several ranks the generator and the student train in DDP, each wrapped on its own so that each
    phase's backward all-reduces the gradients of the network whose optimiser steps in it; the student's
    pass in the generator step is the bare student (Game.judge_features). The teacher is not wrapped:
    it has no trainable weights and is the same on every rank."""
    speed.layout(generator, student, teacher)
    student_features = judge = speed.maybe_compile(student.forward_features)
    generate = generator
    if distributed.world() > 1:
        sync_bn = recipe.parallel.sync_bn
        generate = distributed.wrap(generator, sync_bn=sync_bn)
        student_features = speed.maybe_compile(distributed.wrap(_Features(student), sync_bn=sync_bn))
    return Game(generator, student, teacher, opt_g, opt_s, sched_g, sched_s, beta=recipe.loss.beta,
                temperature=recipe.loss.temperature, grad_clip=recipe.optim.grad_clip,
                generator_steps=recipe.generator_steps, student_steps=recipe.student_steps, autocast=speed.autocast,
                generate=speed.maybe_compile(generate), student_features=student_features, judge_features=judge,
                teacher_features=speed.maybe_compile(teacher.forward_features),
                scaler_generator=speed.grad_scaler(), scaler_student=speed.grad_scaler())


class _Features(torch.nn.Module):
    """The student's ``forward_features`` as its ``forward``: DDP hooks ``forward`` only."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_features(x)


def _warn(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold yellow]warning:[/] {message}")
