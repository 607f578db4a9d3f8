"""Evaluation of a distilled student (ZSKT, KD, ...): its accuracy, its teacher's, their agreement,
and on request belief matching (``--metric transition-curves``). The teacher is the one the
student's config.json records (the exact Hub commit when it came from the Hub) or ``--teacher``."""

from __future__ import annotations

from pathlib import Path

from toolbox import artifacts, data
from toolbox.errors import UsageError
from toolbox.evaluation import accuracy, number_option, predict
from toolbox.transition import belief_matching

METRICS = ("accuracy", "transition-curves")


def teacher_ref(config: dict, override: str | None) -> str:
    """The teacher a student was distilled from: ``--teacher`` if given, else the one its config records
    (pinned to the exact Hub commit when it came from the Hub)."""
    if override:
        return override
    info = config.get("teacher") or {}
    if info.get("repo") and info.get("commit"):
        return f"hf-hub:{info['repo']}@{info['commit']}"
    if info.get("path") and Path(info["path"]).exists():
        return info["path"]
    if not info:
        raise UsageError("the student's config.json records no teacher; pass it with --teacher RUN_DIR_OR_HF_REF")
    what = f"a {info.get('architecture', 'model')} teacher at {info.get('path') or info.get('ref')}"
    if info.get("recipe"):  # a default teacher: its recipe recreates it exactly (seeded, cached)
        how = (f"recreate it with `toolbox train supervised -r {info['recipe']}` and pass that run's folder with "
               "--teacher, or pass a copy of the original with --teacher RUN_DIR")
    else:
        how = "pass that teacher with --teacher RUN_DIR_OR_HF_REF (push students with --push-teacher to avoid this)"
    raise UsageError(f"the student was distilled from {what}, which is not on this machine and was never pushed "
                     f"to the Hub; {how}")


def evaluate_student(source, options: dict, device, out, method: str = "distilled") -> dict:
    from .evaluation import check_options

    check_options(options, ("teacher", "images", "steps"), f"evaluating a {method} student")
    metric = options.get("metric") or "accuracy"
    if metric not in METRICS:
        raise UsageError(f"{method} students support --metric {' or '.join(METRICS)}, not '{metric}'")
    images = number_option(options, "images", 1000, 1, 10**6)  # read before any work, like every option
    steps = number_option(options, "steps", 200, 1, 10**6)
    student = artifacts.load_model(source, device=device)
    real = data.load(student.config["dataset"])
    if not student.config.get("teacher") and not options.get("teacher"):
        if metric != "accuracy":
            raise UsageError(f"--metric {metric} compares a student with its teacher; this run had none: pass --teacher")
        acc = accuracy(student.model, real.test_x, real.test_y, mean=student.mean, std=student.std, device=device)
        return {"metrics": {"accuracy": acc}, "dataset": real.name, "test_images": len(real.test_y)}
    teacher = artifacts.load_model(teacher_ref(student.config, options.get("teacher")), device=device)
    if teacher.config["num_classes"] != student.config["num_classes"]:
        raise UsageError(f"teacher predicts {teacher.config['num_classes']} classes, the student {student.config['num_classes']}")
    x = real.normalize(real.test_x).to(device)
    y = real.test_y.to(device)
    s_pred = predict(student.model, x, device=device).argmax(1).to(device)
    t_pred = predict(teacher.model, x, device=device).argmax(1).to(device)
    metrics = {"accuracy": (s_pred == y).float().mean().item(), "teacher_accuracy": (t_pred == y).float().mean().item(),
               "agreement": (s_pred == t_pred).float().mean().item()}
    result = {"metrics": metrics, "dataset": real.name, "test_images": len(y), "teacher": teacher.source.describe()}
    if metric == "transition-curves":
        result.update(belief_matching(student.model, teacher.model, x, real.num_classes, Path(out),
                                      images=images, steps=steps))
        metrics["mte"] = result.pop("mte")
    return result
