"""`toolbox evaluate RUN --metric gradient-leakage`: how much of single training examples leaks
from their gradients, for a trained model or a fresh one of the same architecture."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from toolbox import artifacts, data
from toolbox.errors import UsageError
from toolbox.evaluation import check_options
from toolbox.models import build_for
from toolbox.seeding import init_with_seed

from .idlg import extract_label, reconstruct, victim_gradient

SUCCESS_MSE = 1e-3  # the spec's "recovered" threshold, in [0, 1] pixel space


def _options(options: dict) -> dict:
    check_options(options, ("mode", "split", "n", "iters", "seed", "untrained"), "the gradient-leakage audit")
    mode = options.get("mode") or "idlg"
    if mode not in ("idlg", "dlg"):
        raise UsageError(f"--mode must be idlg or dlg, not '{mode}'")
    split = options.get("split") or "test"
    if split not in ("train", "test"):
        raise UsageError(f"--split must be train or test, not '{split}'")
    try:
        n, iters, seed = int(options.get("n") or 10), int(options.get("iters") or 300), int(options.get("seed") or 0)
    except ValueError as e:
        raise UsageError(f"--n, --iters and --seed take integers ({e})") from None
    if n < 1 or iters < 1:
        raise UsageError("--n and --iters must be at least 1")
    if seed < 0:
        raise UsageError(f"--seed must be 0 or more (got {seed})")
    return {"mode": mode, "split": split, "n": n, "iters": iters, "seed": seed, "untrained": bool(options.get("untrained"))}


def _fresh(config: dict, spec, seed: int):
    """A freshly initialised network of the model's architecture, its initialisation drawn from ``seed``."""
    return init_with_seed(lambda: build_for(config["architecture"], spec, **config.get("arch_kwargs", {})), seed)


def audit(source, options: dict, device, out: Path) -> dict:
    opts = _options(options)
    loaded = artifacts.load_model(source, device=device)
    real = data.load(loaded.config["dataset"])
    if opts["untrained"]:
        loaded.model = _fresh(loaded.config, real.spec, opts["seed"]).to(device)
    model = loaded.model.eval()  # batch norm on running statistics: one example per gradient
    pool_x, pool_y = (real.train_x, real.train_y) if opts["split"] == "train" else (real.test_x, real.test_y)
    gen = torch.Generator().manual_seed(opts["seed"])
    picks = torch.randperm(len(pool_x), generator=gen)[: opts["n"]]
    started = time.process_time()
    rows, originals, recovered, notes = [], [], [], []
    for i in picks.tolist():
        x = real.normalize(pool_x[i:i + 1]).to(device)
        y = pool_y[i:i + 1].to(device)
        victim = victim_gradient(model, x, y, real.num_classes)
        label = None
        if opts["mode"] == "idlg":
            if victim.label_weight_index is None:
                raise UsageError(f"architecture '{loaded.config['architecture']}' has no final linear layer with one "
                                 "output per class, so iDLG cannot read the label; use --mode dlg")
            label = extract_label(victim)
        rec = reconstruct(model, victim, real.shape, real.num_classes, label=label, iters=opts["iters"], generator=gen)
        original = pool_x[i:i + 1]
        image = real.denormalize(rec.image.cpu()).clamp(0, 1)
        mse = ((image - original) ** 2).mean().item()
        holds = victim.logits_from_layer and victim.penultimate_min is not None and victim.penultimate_min >= 0
        rows.append({"index": i, "label": int(y), "recovered_label": rec.label, "mse": mse,
                     "psnr": 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-10))).item(), "match_loss": rec.loss,
                     "lbfgs_steps": rec.steps, "label_assumption_holds": holds})
        originals.append(original)
        recovered.append(image)
    seconds = time.process_time() - started
    if opts["mode"] == "idlg" and not all(r["label_assumption_holds"] for r in rows):
        notes.append("label extraction assumes batch size 1 (used here) and non-negative inputs to a final linear "
                     "logits layer; this model breaks the second on "
                     f"{sum(not r['label_assumption_holds'] for r in rows)}/{len(rows)} examples, so its label "
                     "accuracy is not guaranteed")
    figure = _figure(out / "gradient_leakage.png", torch.cat(originals), torch.cat(recovered), rows, opts["mode"])
    metrics = {
        "label_accuracy": sum(r["recovered_label"] == r["label"] for r in rows) / len(rows),
        "mse": sum(r["mse"] for r in rows) / len(rows),
        "psnr": sum(r["psnr"] for r in rows) / len(rows),
        f"recovered_mse<{SUCCESS_MSE:g}": sum(r["mse"] < SUCCESS_MSE for r in rows) / len(rows),
        "cpu_seconds_per_example": seconds / len(rows),
    }
    return {
        "metrics": metrics,
        "protocol": {"mode": opts["mode"], "examples": len(rows), "split": opts["split"], "seed": opts["seed"],
                     "batch_size": 1, "optimizer": "LBFGS lr 1", "max_steps": opts["iters"], "stop_loss": 1e-6,
                     "distance": "sum of squared gradient differences",
                     "model": "freshly initialised" if opts["untrained"] else "trained weights",
                     "pixel_space": "[0, 1], reconstruction clamped"},
        "examples": rows, "files": [str(figure)], "notes": "; ".join(notes),
        "dataset": real.name, "architecture": loaded.config["architecture"],
    }


def _figure(path: Path, originals, recovered, rows, mode: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n + 0.6, 2.8), squeeze=False)
    for j in range(n):
        for row, images, title in ((0, originals, f"y={rows[j]['label']}"),
                                   (1, recovered, f"{rows[j]['recovered_label']} {rows[j]['mse']:.0e}")):
            img = images[j].permute(1, 2, 0).numpy()
            ax = axes[row][j]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    axes[0][0].text(-0.3, 0.5, "original", rotation=90, transform=axes[0][0].transAxes, va="center", fontsize=8)
    axes[1][0].text(-0.3, 0.5, mode, rotation=90, transform=axes[1][0].transAxes, va="center", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
