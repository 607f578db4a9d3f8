"""``toolbox evaluate`` for ZSKT students: accuracy, teacher accuracy, agreement, and on request
belief matching (``--metric transition-curves``)."""

from __future__ import annotations

from pathlib import Path

from toolbox import artifacts, data
from toolbox.errors import UsageError
from toolbox.evaluation import predict

from .transition import agreeing_indices, mean_transition_error, plot_transition_curves, transition_curves

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
    raise UsageError("the student's teacher is not available here (config.json records "
                     f"{info.get('ref') or 'none'}); pass it with --teacher RUN_DIR_OR_HF_REF")


def evaluate_student(source, options: dict, device, out) -> dict:
    metric = options.get("metric") or "accuracy"
    if metric not in METRICS:
        raise UsageError(f"zskt students support --metric {' or '.join(METRICS)}, not '{metric}'")
    student = artifacts.load_model(source, device=device)
    real = data.load(student.config["dataset"])
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
        result.update(_belief_matching(student.model, teacher.model, x, real.num_classes, options, Path(out)))
        metrics["mte"] = result.pop("mte")
    return result


def _belief_matching(student, teacher, x, num_classes: int, options: dict, out: Path) -> dict:
    """The paper's protocol: up to 1000 agreeing test images, all other classes, 200 steps of size 1,
    MTE over the first 100 steps."""
    limit = int(options.get("images") or 1000)
    steps = int(options.get("steps") or 200)
    idx, classes = agreeing_indices(student, teacher, x, limit=limit)
    if len(idx) == 0:
        raise UsageError("student and teacher agree on no test image: there is no transition to measure")
    p_s, p_t = transition_curves(student, teacher, x[idx], classes, num_classes, steps=steps, lr=1.0)
    mte = mean_transition_error(p_s, p_t, steps=min(100, steps))
    fig = plot_transition_curves(p_s, p_t, mte_steps=min(100, steps))
    out.mkdir(parents=True, exist_ok=True)
    png = out / "transition_curves.png"
    fig.savefig(png, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    from safetensors.torch import save_file

    curves = out / "transition_curves.safetensors"
    save_file({"student": p_s.contiguous(), "teacher": p_t.contiguous(), "indices": idx.cpu().contiguous(),
               "classes": classes.cpu().contiguous()}, str(curves))
    return {"mte": mte, "files": [str(png), str(curves)],
            "protocol": {"images": len(idx), "targets": num_classes - 1, "steps": steps, "step_size": 1.0,
                         "mte_steps": min(100, steps), "space": "normalised input"}}
