"""Belief matching (ZSKT section 4.4): transition curves and the Mean Transition Error (MTE).

For images on which two networks agree, walk each image towards each other class j by plain
gradient descent on the cross-entropy of network A (the student) in normalised input space, and
record p_j under A and under B (the teacher) at every step. Networks that match beliefs, not just
labels, move together: MTE = mean |p_j^B - p_j^A| over images, targets and the first 100 steps.

Works for any pair of classifiers taking the same input (only ``forward`` is used). The reference
runs one image and one target at a time; here all (image, target) pairs of a chunk walk together.
Both networks are in eval mode, so no sample influences another and the summed loss gives each pair
exactly its own single-image gradient.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F


def agreeing_indices(net_a, net_b, x, limit: int = 1000, batch_size: int = 1000):
    """Indices (in order) of the first ``limit`` images of ``x`` on which both networks predict the same
    class, and those classes."""
    with torch.no_grad():
        pa = torch.cat([net_a(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
        pb = torch.cat([net_b(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    idx = torch.nonzero(pa == pb).flatten()[:limit]
    return idx, pa[idx]


def transition_curves(net_a, net_b, x, classes, num_classes: int, steps: int = 200, lr: float = 1.0,
                      batch_size: int = 1024):
    """-> (p_a, p_b), each [N, num_classes - 1, steps]: the probability of target class j under each network
    before each step, for targets j = class + 1, ..., class + C - 1 (mod C) of every image.

    x: normalised images [N, ...] on which both networks agree; classes: their shared prediction [N].
    Gradient steps are taken on ``net_a`` only: x <- x - lr * grad_x CE(net_a(x), j).
    """
    was = net_a.training, net_b.training
    net_a.eval()
    net_b.eval()
    n, k = len(x), num_classes - 1
    offsets = torch.arange(1, num_classes, device=classes.device)
    targets = ((classes[:, None] + offsets[None, :]) % num_classes).flatten()
    starts = x.repeat_interleave(k, dim=0)
    p_a = torch.empty(n * k, steps)
    p_b = torch.empty(n * k, steps)
    try:
        for lo in range(0, n * k, batch_size):
            xa = starts[lo:lo + batch_size].clone()
            t = targets[lo:lo + batch_size].to(xa.device)
            rows = torch.arange(len(t), device=xa.device)
            for step in range(steps):
                xa.requires_grad_(True)
                logits_a = net_a(xa)
                with torch.no_grad():
                    logits_b = net_b(xa)
                (grad,) = torch.autograd.grad(F.cross_entropy(logits_a, t, reduction="sum"), xa)
                with torch.no_grad():
                    p_a[lo:lo + len(t), step] = logits_a.softmax(1)[rows, t].float().cpu()
                    p_b[lo:lo + len(t), step] = logits_b.softmax(1)[rows, t].float().cpu()
                    xa = xa.detach() - lr * grad
    finally:
        net_a.train(was[0])
        net_b.train(was[1])
    return p_a.view(n, k, steps), p_b.view(n, k, steps)


def mean_transition_error(p_a, p_b, steps: int = 100) -> float:
    """mean |p_b - p_a| over images, targets and the first ``steps`` steps."""
    return (p_b[..., :steps] - p_a[..., :steps]).abs().mean().item()


def plot_transition_curves(p_a, p_b, name_a: str = "student", name_b: str = "teacher", mte_steps: int = 100):
    """A matplotlib figure: mean p_j over all images and targets under both networks, with a band of
    one standard deviation, and the MTE window marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = torch.arange(p_a.shape[-1])
    for p, name, color in ((p_a, name_a, "tab:blue"), (p_b, name_b, "tab:orange")):
        flat = p.reshape(-1, p.shape[-1])
        mean, std = flat.mean(0), flat.std(0) if len(flat) > 1 else torch.zeros(flat.shape[-1])
        ax.plot(steps, mean, label=f"{name} p_j", color=color)
        ax.fill_between(steps, (mean - std).clamp(0, 1), (mean + std).clamp(0, 1), color=color, alpha=0.15)
    ax.axvline(mte_steps, color="grey", linestyle=":", label=f"MTE window ({mte_steps} steps)")
    ax.set_xlabel(f"gradient step on {name_a} towards class j")
    ax.set_ylabel("p_j")
    ax.set_ylim(0, 1)
    ax.set_title(f"transition curves: MTE = {mean_transition_error(p_a, p_b, mte_steps):.3f} "
                 f"({p_a.shape[0]} images x {p_a.shape[1]} targets)")
    ax.legend(loc="lower right")
    return fig


def belief_matching(student, teacher, x, num_classes: int, out: Path, images: int = 1000, steps: int = 200) -> dict:
    """The ZSKT paper's protocol on normalised images ``x``: up to 1000 agreeing images, all other
    classes, 200 steps of size 1, MTE over the first 100 steps; curves as PNG + safetensors in ``out``.
    Returns {"mte", "files", "protocol"}."""
    from .errors import UsageError

    idx, classes = agreeing_indices(student, teacher, x, limit=images)
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
