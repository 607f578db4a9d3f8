"""The dataset card (README.md) of a condensed set: what it is, how it was made, what it scores
and under which evaluation protocol."""

from __future__ import annotations

import json
from pathlib import Path

from toolbox.state import atomic_write_text


def write_card(folder: Path, *, method: str, dataset: str, ipc: int, paper: str, metrics: dict, protocol: dict,
               expect: dict | None) -> Path:
    acc, std = metrics.get("accuracy"), metrics.get("accuracy_std")
    lines = [
        "---", "tags: [toolbox, dataset-condensation, " + method + "]", "---", "",
        f"# {method.upper()} condensed {dataset}, {ipc} image(s) per class", "",
        f"Synthetic training set made with `toolbox condense {dataset} --method {method} --ipc {ipc}`.",
        f"Method: {paper}.", "",
        "Files: `synthetic.safetensors` (`images`: normalised float32 [N, C, H, W], `labels`: int64),",
        "`config.json` (format `toolbox-condensed`: dataset statistics, seeds, protocol), `images/synthetic.png`.", "",
        "## Evaluation", "",
        f"Test accuracy of {protocol['models']} fresh {protocol['arch']} models trained on this set only: "
        f"**{100 * acc:.2f} ± {100 * std:.2f} %**." if acc is not None else "Not evaluated.", "",
        "Protocol (numbers move with it; compare only under the same protocol):", "",
        "```json", json.dumps(protocol, indent=2), "```", "",
    ]
    if expect:
        lines += [f"Paper: {100 * expect['value']:.1f} % ({expect.get('source', '')}). {expect.get('note', '')}", ""]
    lines += ["Re-evaluate, with baselines under the same protocol:",
              "`toolbox evaluate <this folder> --baselines random,herding,kcenter,whole`", ""]
    path = Path(folder) / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path
