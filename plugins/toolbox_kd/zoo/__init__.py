"""The distillation zoo: named losses beyond Hinton KD and attention transfer, each on the feature
taps of toolbox_kd.features (RepDistiller's feature list: stem, group outputs, pooled vector).

No torch at import: the recipe schema and --help read the names and settings without it. A distiller
is the class at its entry here, built once the shapes of the student's and the teacher's features are
known (see toolbox_kd.zoo.base.Distiller)."""

from __future__ import annotations

import importlib

# name -> "module:Class" under toolbox_kd.zoo; the names are the ones --loss takes
DISTILLERS = {
    "fitnet": "fitnet:FitNet",
    "sp": "sp:SP",
    "cc": "cc:CC",
    "vid": "vid:VID",
    "rkd": "rkd:RKD",
    "pkt": "pkt:PKT",
    "ab": "ab:AB",
    "ft": "ft:FT",
    "fsp": "fsp:FSP",
    "nst": "nst:NST",
    "crd": "crd:CRD",
    "kd-svd": "kdsvd:KDSVD",
    "mhgd": "mhgd:MHGD",
    "iep": "iep:IEP",
}


def distiller_name(kind: str) -> str | None:
    """The zoo distiller a loss kind names ('crd' and 'kd+crd' both name crd), or None (ce, kd, at, kd+at)."""
    name = kind.removeprefix("kd+")
    return name if name in DISTILLERS else None


def distiller_class(name: str):
    module, cls = DISTILLERS[name].split(":")
    return getattr(importlib.import_module(f"toolbox_kd.zoo.{module}"), cls)


def settings_field(name: str) -> str:
    """The recipe section under ``loss`` that holds a distiller's settings ('kd-svd' -> loss.kd_svd)."""
    return name.replace("-", "_")
