"""The digits comparison of every distiller: few-shot (M = 5 images per class) KD of a WRN-16-1
student from the cached WRN-16-2 digits teacher, one recipe per loss (recipes/kd/digits-<loss>-m5.yaml:
CE alone, Hinton KD, and each zoo distiller alone), over seeds, then one `toolbox compare` table.

Each run is the recipe with ``schedule.epochs`` (default 10: a third of the recipe's 30, scaled by
N_train / (10 * 5) to 270 SGD steps; the few-shot test uses the same) and a stage, where a method has
one, at its recipe's length. The seed draws the 50 images, the student's initialisation and the
augmentation; every loss sees the same 50 images for a seed.

    python benchmarks/digits_kd_zoo.py [--out runs/digits-kd] [--seeds 0 1 2] [--epochs 10] [--threads 1]
        [--losses ce kd fitnet ...] > docs/benchmarks/digits-kd.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

LOSSES = ["ce", "kd", "fitnet", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst", "crd", "kd-svd", "mhgd", "iep"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/digits-kd"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--losses", nargs="+", default=LOSSES)
    args = parser.parse_args()
    failed = []
    for loss in args.losses:
        for seed in args.seeds:
            run = args.out / f"{loss}-s{seed}"
            if (run / "summary.json").exists():
                continue
            cmd = [sys.executable, "-m", "toolbox", "distill", "kd", "-r", f"kd/digits-{loss}-m5", "--seed", str(seed),
                   "-o", f"schedule.epochs={args.epochs}", "--threads", str(args.threads), "--device", "cpu",
                   "--out", str(run)]
            if (run / "run.json").exists():
                cmd = [sys.executable, "-m", "toolbox", "distill", "kd", "--resume", str(run), "--threads",
                       str(args.threads), "--device", "cpu"]
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if done.returncode != 0:
                failed.append(f"{loss} seed {seed}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
            print(f"{loss} seed {seed}: {'ok' if done.returncode == 0 else 'FAILED'}", file=sys.stderr, flush=True)
    runs = sorted(str(p) for p in args.out.glob("*-s*") if (p / "summary.json").exists())
    table = subprocess.run([sys.executable, "-m", "toolbox", "compare", *runs, "--by", "loss.kind", "--markdown"],
                           capture_output=True, text=True, check=True).stdout
    print(table)
    for line in failed:
        print(f"- failed: {line}")


if __name__ == "__main__":
    main()
