"""A KD run: teacher, student, (few-shot) data, the composed loss, SGD with a step schedule."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from toolbox import data
from toolbox.augment import random_crop_flip
from toolbox.errors import UsageError
from toolbox.evaluation import accuracy, predict
from toolbox.losses import attention_loss, kd_loss
from toolbox.registry import current
from toolbox.teachers import load_teacher, teacher_record

from .features import FeatureTap, check_attention_pairs, default_layers
from .shots import sample_shots, scaled_schedule, step_schedule


def kd_objective(recipe_loss, s_logits, y, t_logits=None, s_feats=(), t_feats=()):
    """The recipe's composed loss (see recipe.Loss)."""
    kind, a, T = recipe_loss.kind, recipe_loss.alpha, recipe_loss.temperature
    if kind in ("kd", "kd+at"):
        if recipe_loss.kl_reduction == "mean":
            loss = kd_loss(s_logits, t_logits, y, a, T)
        else:  # textbook Hinton: KL per sample, times alpha T^2
            kl = F.kl_div(F.log_softmax(s_logits / T, 1), F.softmax(t_logits / T, 1), reduction="batchmean")
            loss = (1 - a) * F.cross_entropy(s_logits, y) + a * T * T * kl
    else:
        loss = F.cross_entropy(s_logits, y)
    if kind in ("at", "kd+at"):
        loss = loss + recipe_loss.at_weight * sum(attention_loss(s, t) for s, t in zip(s_feats, t_feats))
    return loss


def train_kd(recipe, run) -> dict:
    device = run.device
    real = data.load(recipe.data.dataset)
    spec = real.spec
    needs_teacher = recipe.loss.kind != "ce"
    uses_at = recipe.loss.kind in ("at", "kd+at")

    x_all, y_all = real.normalize(real.train_x), real.train_y
    shots = recipe.data.shots
    if shots > 0:
        idx = sample_shots(y_all, shots, spec.num_classes, run.generator("shots"))
        x_all, y_all = x_all[idx], y_all[idx]
        run.record(shots={"per_class": shots, "indices": idx.tolist()})
    epochs, milestones = (scaled_schedule(recipe.schedule.epochs, recipe.schedule.milestones, len(real.train_y),
                                          spec.num_classes, shots) if recipe.schedule.scale_with_shots
                          else (recipe.schedule.epochs, recipe.schedule.milestones))

    c, _, w = spec.shape
    student = current().architecture(recipe.student.arch)(
        num_classes=spec.num_classes, in_channels=c, image_size=w, **recipe.student.kwargs).to(device)
    teacher = teacher_info = None
    if needs_teacher or recipe.teacher.source:
        loaded = load_teacher(recipe.teacher.source, recipe.teacher.recipe, device)
        teacher = loaded.model
        if loaded.config["num_classes"] != spec.num_classes or tuple(loaded.config["input_shape"]) != tuple(spec.shape):
            raise UsageError(f"teacher was trained on {loaded.config.get('dataset')} ({loaded.config['num_classes']} classes, "
                             f"input {loaded.config['input_shape']}), not {spec.name}; pick a teacher for this dataset")
        teacher_info = teacher_record(loaded, recipe.teacher.source, recipe.teacher.recipe)
        run.record(teacher=teacher_info)
    s_tap = t_tap = None
    if uses_at:
        s_layers = recipe.loss.student_layers or default_layers(student, recipe.student.arch, "student")
        t_layers = recipe.loss.teacher_layers or default_layers(teacher, loaded.config["architecture"], "teacher")
        s_tap = FeatureTap(student, s_layers, recipe.student.arch, "student")
        t_tap = FeatureTap(teacher, t_layers, loaded.config["architecture"], "teacher")
        check_attention_pairs(s_tap, t_tap, student, teacher, spec.shape, device)

    opt = torch.optim.SGD(student.parameters(), lr=recipe.optim.lr, momentum=recipe.optim.momentum,
                          weight_decay=recipe.optim.weight_decay)
    sched = step_schedule(opt, milestones, recipe.schedule.gamma)
    start = 0
    state = run.load_checkpoint()
    if state is not None:
        start = run.restore(state, student=student, optimizer=opt, scheduler=sched)

    n = len(x_all)
    batch = min(recipe.data.batch_size, n)
    steps = math.ceil(n / batch)
    every_eval = recipe.eval_every or max(1, epochs // 20)
    every_ckpt = recipe.checkpoint_every or max(1, epochs // 20)
    order_gen, aug_gen = run.generator("order"), run.generator("augment")
    x_all, y_all = x_all.to(device), y_all.to(device)
    test_x = real.normalize(real.test_x)
    metrics: dict = {}
    title = f"kd[{recipe.loss.kind}] -> {recipe.student.arch} on {spec.name}" + (f", {shots} shots" if shots else "")
    with run.progress(epochs, title, start=start) as bar:
        for epoch in range(start, epochs):
            student.train()
            order = torch.randperm(n, generator=order_gen).to(device)
            total = 0.0
            for i in range(steps):
                idx = order[i * batch:(i + 1) * batch]
                x, y = x_all[idx], y_all[idx]
                if recipe.data.augment != "none":
                    x = random_crop_flip(x, recipe.data.crop_padding, recipe.data.augment == "crop_flip", aug_gen)
                t_logits, t_feats = None, []
                if teacher is not None and needs_teacher:
                    with torch.no_grad():
                        t_logits, t_feats = t_tap(teacher, x) if t_tap else (teacher(x), [])
                s_logits, s_feats = s_tap(student, x) if s_tap else (student(x), [])
                loss = kd_objective(recipe.loss, s_logits, y, t_logits, s_feats, t_feats)
                run.check_finite(loss, epoch * steps + i)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item()
            sched.step()
            metrics = {"loss": total / steps, "lr": sched.get_last_lr()[0]}
            if (epoch + 1) % every_eval == 0 or epoch + 1 == epochs:
                metrics["accuracy"] = accuracy(student, test_x, real.test_y, device=device)
            run.log(epoch + 1, **metrics)
            bar.update(1, **{k: v for k, v in metrics.items() if k != "lr"})
            if (epoch + 1) % every_ckpt == 0 and epoch + 1 < epochs:
                run.save_checkpoint({"student": student.state_dict(), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict()}, epoch + 1)

    final = {"accuracy": metrics["accuracy"], "loss": metrics["loss"]}
    if teacher is not None:
        s_pred = predict(student, test_x, device=device).argmax(1)
        t_pred = predict(teacher, test_x, device=device).argmax(1)
        final["teacher_accuracy"] = (t_pred == real.test_y).float().mean().item()
        final["agreement"] = (s_pred == t_pred).float().mean().item()
    run.save_model(student, arch=recipe.student.arch, arch_kwargs=recipe.student.kwargs, dataset=spec, metrics=final,
                   extra={"teacher": teacher_info, "shots": shots, "train_images": n, "epochs": epochs,
                          "loss": recipe.loss.model_dump()})
    return final
