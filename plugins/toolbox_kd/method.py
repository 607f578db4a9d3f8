"""A KD run: teacher, student, (few-shot) data and the composed loss, trained on the engine
(toolbox.engine) with SGD and a step schedule. KD supplies only its loss; the engine owns the loop,
precision, layout, compile, host reads and resume."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toolbox import data, distributed, engine
from toolbox.augment import random_crop_flip
from toolbox.errors import UsageError
from toolbox.evaluation import accuracy, predict
from toolbox.losses import attention_loss, kd_loss
from toolbox.models import build_for
from toolbox.teachers import load_teacher, teacher_record

from . import zoo
from .features import FeatureTap, check_attention_pairs, default_layers, feature_shapes, repdistiller_layers
from .shots import sample_shots, scaled_schedule, step_schedule
from .zoo import clip
from .zoo.base import pool_to_smaller


def zoo_objective(recipe_loss, term, s_logits, y, t_logits):
    """RepDistiller's train_distill sum: gamma CE + alpha T^2 KL_batchmean (kd+<name> only) + beta term,
    with gamma, alpha, beta = ce_weight, kd_weight and the distiller's weight (see recipe.Loss)."""
    task, weighted = zoo_parts(recipe_loss, term, s_logits, y, t_logits)
    return task if weighted is None else task + weighted


def zoo_parts(recipe_loss, term, s_logits, y, t_logits):
    """-> (gamma CE + alpha T^2 KL, beta term or None): the task's side and the distiller's, which
    ``clip_to_ce`` differentiates apart."""
    task = recipe_loss.ce_weight * F.cross_entropy(s_logits, y)
    if recipe_loss.kind.startswith("kd+"):
        T = recipe_loss.temperature
        kl = F.kl_div(F.log_softmax(s_logits / T, 1), F.softmax(t_logits / T, 1), reduction="batchmean")
        task = task + recipe_loss.kd_weight * T * T * kl
    if term is None:
        return task, None
    return task, _settings(recipe_loss).weight * term


def _settings(recipe_loss):
    return getattr(recipe_loss, zoo.settings_field(zoo.distiller_name(recipe_loss.kind)))


def kd_objective(recipe_loss, s_logits, y, t_logits=None, s_feats=(), t_feats=()):
    """The recipe's composed loss (see recipe.Loss) for ce, kd, at and kd+at."""
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
        if recipe_loss.at_pool:
            s_feats, t_feats = zip(*(pool_to_smaller(s, t) for s, t in zip(s_feats, t_feats)))
        loss = loss + recipe_loss.at_weight * sum(attention_loss(s, t) for s, t in zip(s_feats, t_feats))
    return loss


def train_kd(recipe, run) -> dict:
    device = run.device
    real = data.load(recipe.data.dataset)
    spec = real.spec
    needs_teacher = recipe.loss.kind != "ce"
    uses_at = recipe.loss.kind in ("at", "kd+at")

    # a tensor, or (a folder or Hub dataset over the memory budget) a dataset decoded from disk per item
    x_all, y_all = real.normalized_train(), real.train_y
    shots = recipe.data.shots
    if shots > 0:
        idx = sample_shots(y_all, shots, spec.num_classes, run.generator("shots"))
        x_all = x_all.tensor_at(idx) if real.streamed else x_all[idx]  # a few shots always fit in memory
        y_all = y_all[idx]
        run.record(shots={"per_class": shots, "indices": idx.tolist()})
    epochs, milestones = (scaled_schedule(recipe.schedule.epochs, recipe.schedule.milestones, len(real.train_y),
                                          spec.num_classes, shots) if recipe.schedule.scale_with_shots
                          else (recipe.schedule.epochs, recipe.schedule.milestones))

    student = build_for(recipe.student.arch, spec, **recipe.student.kwargs).to(device)
    teacher = teacher_info = None
    if needs_teacher or recipe.teacher.source:
        loaded = load_teacher(recipe.teacher.source, recipe.teacher.recipe, device)
        teacher = loaded.model
        if loaded.config["num_classes"] != spec.num_classes or tuple(loaded.config["input_shape"]) != tuple(spec.shape):
            raise UsageError(f"teacher was trained on {loaded.config.get('dataset')} ({loaded.config['num_classes']} classes, "
                             f"input {loaded.config['input_shape']}), not {spec.name}; pick a teacher for this dataset")
        teacher_info = teacher_record(loaded, recipe.teacher.source, recipe.teacher.recipe)
        run.record(teacher=teacher_info)
    s_tap = t_tap = distiller = stage = None
    name = zoo.distiller_name(recipe.loss.kind)
    if name:
        s_tap, t_tap, distiller, stage = build_distiller(recipe, name, student, teacher, loaded.config["architecture"],
                                                  spec.shape, len(y_all), device)
        if distiller.needs_index:  # the sample's row in the training set rides along with its label
            distiller.bind_training_set(y_all, run.generator(name, device))
            y_all = torch.stack([y_all, torch.arange(len(y_all))], 1)
    elif uses_at:
        s_layers = recipe.loss.student_layers or default_layers(student, recipe.student.arch, "student")
        t_layers = recipe.loss.teacher_layers or default_layers(teacher, loaded.config["architecture"], "teacher")
        s_tap = FeatureTap(student, s_layers, recipe.student.arch, "student")
        t_tap = FeatureTap(teacher, t_layers, loaded.config["architecture"], "teacher")
        check_attention_pairs(s_tap, t_tap, student, teacher, spec.shape, device, pool=recipe.loss.at_pool)

    if getattr(x_all, "streamed", False):  # the same order from the same generator, decoded as it goes
        batches = engine.LoaderBatches(x_all.with_labels(y_all), recipe.data.batch_size, run.generator("order"), device)
    else:
        batches = engine.TensorBatches(x_all, y_all, recipe.data.batch_size, run.generator("order"), device)
    title = f"kd[{recipe.loss.kind}] -> {recipe.student.arch} on {spec.name}" + (f", {shots} shots" if shots else "")
    checkpoint_every = recipe.checkpoint_every or max(1, epochs // 20)
    extra = {"distiller": distiller} if distiller is not None else None
    first_epoch = 0
    augment = run.generator("augment")
    if stage is not None:  # e.g. FitNet's hints: its own optimiser, epochs numbered before distillation's
        if recipe.schedule.scale_with_shots:  # as many SGD steps as the stage takes on the full data
            stage.epochs = scaled_schedule(stage.epochs, [], len(real.train_y), spec.num_classes, shots)[0]
        stage_opt = engine.make_optimizer(stage.parameters, recipe.optim.model_copy(
            update={"lr": stage.lr or recipe.optim.lr}))
        pre = engine.Engine(run, student, stage_opt, None, speed=recipe.speed, loop=recipe.loop, extra=extra)
        pre.fit(batches, stage.epochs, loss=stage_step_loss(recipe, pre, teacher, stage, distiller, s_tap, t_tap, augment),
                checkpoint_every=checkpoint_every, title=f"{name} stage '{stage.name}'", last_stage=False,
                loss_key=f"{stage.name}_loss")
        first_epoch = stage.epochs
        run.record(stages={stage.name: {"epochs": [0, stage.epochs]}, "distillation": {"epochs": [first_epoch, first_epoch + epochs]}})

    params = list(student.parameters()) + (distiller.main_parameters() if distiller is not None else [])
    opt = engine.make_optimizer(params, recipe.optim)
    sched = step_schedule(opt, milestones, recipe.schedule.gamma,
                          steps_per_epoch=engine.optimizer_steps(len(batches), recipe.loop.accumulate))
    trainer = engine.Engine(run, student, opt, sched, speed=recipe.speed, loop=recipe.loop, extra=extra)
    if distiller is not None and getattr(_settings(recipe.loss), "clip_to_ce", False):
        # the authors' optimiser (zoo/clip.py): a step of ours, not the engine's backward of one sum
        how = {"step": kd_clip_step(recipe, trainer, teacher, s_tap, t_tap, augment, distiller, len(batches))}
    else:
        how = {"loss": kd_step_loss(recipe, trainer, teacher if needs_teacher else None, s_tap, t_tap, augment,
                                    distiller)}
    test_x = real.normalize(real.test_x)

    def evaluate(model):
        return {"accuracy": accuracy(model, test_x, real.test_y, device=device)}

    metrics = trainer.fit(batches, first_epoch + epochs, **how, evaluate=evaluate,
                          eval_every=recipe.eval_every or max(1, epochs // 20), checkpoint_every=checkpoint_every,
                          title=title, first_epoch=first_epoch)

    final = {"accuracy": metrics["accuracy"], "loss": metrics["train_loss"]}
    if teacher is not None:
        s_pred = predict(student, test_x, device=device).argmax(1)
        t_pred = predict(teacher, test_x, device=device).argmax(1)
        final["teacher_accuracy"] = (t_pred == real.test_y).float().mean().item()
        final["agreement"] = (s_pred == t_pred).float().mean().item()
    run.save_model(student, arch=recipe.student.arch, arch_kwargs=recipe.student.kwargs, dataset=spec, metrics=final,
                   extra={"teacher": teacher_info, "shots": shots, "train_images": len(x_all), "epochs": epochs,
                          "loss": recipe.loss.model_dump()})
    return final


def build_distiller(recipe, name, student, teacher, teacher_arch, input_shape, n_data, device):
    """-> (student tap, teacher tap, distiller, its stage or None) for zoo distiller ``name``: taps on
    RepDistiller's feature lists (or the recipe's own student_layers/teacher_layers), the distiller built
    from their shapes."""
    cls = zoo.distiller_class(name)
    s_layers = recipe.loss.student_layers or repdistiller_layers(student, recipe.student.arch, "student", cls.preact)
    s_tap = FeatureTap(student, s_layers, recipe.student.arch, "student")
    t_layers = recipe.loss.teacher_layers or repdistiller_layers(teacher, teacher_arch, "teacher", cls.preact)
    t_tap = FeatureTap(teacher, t_layers, teacher_arch, "teacher")
    s_shapes = feature_shapes(s_tap, student, input_shape, device)
    t_shapes = feature_shapes(t_tap, teacher, input_shape, device)
    distiller = cls(getattr(recipe.loss, zoo.settings_field(name)), s_shapes, t_shapes, n_data).to(device)
    stage = distiller.stage(student)
    if distributed.world() > 1 and (distiller.main_parameters() or stage is not None):
        raise UsageError(f"--loss {name} trains modules of its own beside the student, which runs in one process "
                         "for now; drop --nproc (or distil with a parameter-free loss such as kd, at, sp or pkt)")
    return s_tap, t_tap, distiller, stage


def _augmented(settings, x, generator, trainer):
    if settings.augment == "none":
        return x
    # on several ranks: the whole batch's draws, this rank's rows of them (trainer.share)
    return random_crop_flip(x, settings.crop_padding, settings.augment == "crop_flip", generator, trainer.share)


def kd_step_loss(recipe, trainer, teacher, s_tap, t_tap, augment_generator, distiller=None):
    """The engine's ``loss(forward, x, y)``: the batch's outputs (_batch_outputs), then the composed loss.
    ``teacher`` None: plain cross-entropy, no teacher pass."""
    outputs = _batch_outputs(recipe, trainer, teacher, s_tap, t_tap, augment_generator, distiller)

    def loss(forward, x, y):
        y, index, s_logits, s_feats, t_logits, t_feats = outputs(forward, x, y)
        if distiller is not None:
            return zoo_objective(recipe.loss, distiller(s_feats, t_feats, index), s_logits, y, t_logits)
        return kd_objective(recipe.loss, s_logits, y, t_logits, s_feats, t_feats)

    return loss


def kd_clip_step(recipe, trainer, teacher, s_tap, t_tap, augment_generator, distiller, steps_per_epoch):
    """The engine's ``step(engine, x, y)`` for a distiller whose section sets ``clip_to_ce``: one forward
    as kd_step_loss's, then the task's and the term's gradients apart, the term's clipped per student
    parameter to the task's norm times the warm-up of the epochs distilled (zoo/clip.py), summed and
    applied; returns the batch loss (their sum). The epochs distilled are the optimiser steps the
    distillation stage's scheduler has counted (restored on resume) over ``steps_per_epoch``.

    Under fp16 both losses are multiplied by the engine's loss scale before differentiating: the clip is
    homogeneous (clip(s gd, s ||gc||) = s clip(gd, ||gc||)), so the scaler's unscale, inf check and skip
    in optimizer_step see what its own backward would have left. ``loop.accumulate`` > 1 is refused by
    the engine for any method-owned step."""
    if not recipe.loss.kind.startswith("kd+") and recipe.loss.ce_weight == 0:
        raise UsageError(f"loss.{zoo.settings_field(zoo.distiller_name(recipe.loss.kind))}.clip_to_ce clips the "
                         "term's gradient to the cross-entropy's, which loss.ce_weight=0 removes; set ce_weight > 0 "
                         "or clip_to_ce=false")
    if distributed.world() > 1:
        raise UsageError("clip_to_ce differentiates the task and the term apart, outside the ranks' gradient "
                         "averaging; drop --nproc or set clip_to_ce=false")
    outputs = _batch_outputs(recipe, trainer, teacher, s_tap, t_tap, augment_generator, distiller)
    student = [p for p in trainer.model.parameters() if p.requires_grad]
    own = distiller.main_parameters()

    def step(engine, x, y):
        with engine.autocast():
            y, index, s_logits, s_feats, t_logits, t_feats = outputs(engine.forward, x, y)
            task, term = zoo_parts(recipe.loss, distiller(s_feats, t_feats, index), s_logits, y, t_logits)
        engine.optimizer.zero_grad(set_to_none=True)
        scale = engine.scaler.scale
        factor = clip.warmup(engine.scheduler.last_epoch // steps_per_epoch)
        clip.set_gradients(scale(task), None if term is None else scale(term), student, own, factor)
        engine.optimizer_step()
        return (task if term is None else task + term).detach()

    return step


def _batch_outputs(recipe, trainer, teacher, s_tap, t_tap, augment_generator, distiller):
    """-> outputs(forward, x, y) = (y, index, s_logits, s_feats, t_logits, t_feats) for one batch:
    augment, run the frozen teacher (no gradients, under the engine's autocast like the student, in its
    memory layout and compiled with it), then the student. ``teacher`` None: no teacher pass. With a
    zoo ``distiller``, ``y`` may carry each sample's index as a second column (CRD)."""
    settings = recipe.data
    if teacher is not None:
        trainer.speed.layout(teacher)
        teacher_forward = trainer.speed.maybe_compile(teacher)
    if distiller is not None:
        distiller.train()  # a stage may have left it in eval mode; its frozen parts stay so (its train())

    def outputs(forward, x, y):
        x = _augmented(settings, x, augment_generator, trainer)
        index = None
        if y.dim() == 2:
            y, index = y[:, 0], y[:, 1]
        t_logits, t_feats = None, []
        if teacher is not None:
            with torch.no_grad():
                t_logits, t_feats = t_tap(teacher_forward, x) if t_tap else (teacher_forward(x), [])
        s_logits, s_feats = s_tap(forward, x) if s_tap else (forward(x), [])
        return y, index, s_logits, s_feats, t_logits, t_feats

    return outputs


def stage_step_loss(recipe, trainer, teacher, stage, distiller, s_tap, t_tap, augment_generator):
    """The engine's ``loss`` for a distiller's stage: the stage's own loss on the two feature lists (the
    student's only where it reads them), on the same augmented batches as distillation."""
    trainer.speed.layout(teacher)
    teacher_forward = trainer.speed.maybe_compile(teacher)
    distiller.train()

    def loss(forward, x, y):
        x = _augmented(recipe.data, x, augment_generator, trainer)
        with torch.no_grad():
            _, t_feats = t_tap(teacher_forward, x)
        s_feats = s_tap(forward, x)[1] if stage.needs_student else None
        return stage.loss(s_feats, t_feats)

    return loss
