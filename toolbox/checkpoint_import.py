"""``toolbox import``: a published PyTorch checkpoint (a teacher from a paper's repository) as a toolbox
model folder: safetensors weights, config.json and a card, usable wherever a model folder is (``--teacher``,
``evaluate``, ``push``).

The one place a pickle-format file is ever read, and only on this explicit command: ``torch.load`` with
``weights_only=True`` (torch's restricted unpickler: tensors and plain containers, no code), then only
tensors are accepted, the keys must map onto the chosen architecture exactly (every missing and
unexpected key listed, every shape checked), and the file's sha256 is recorded.

A checkpoint's keys follow its repository's module names. ``LAYOUTS`` maps each known naming onto
ours; the layout is recognised by trying each and keeping the one whose keys match exactly.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .errors import UsageError

# where a checkpoint dict keeps its state dict, in the order tried (RepDistiller: "model"; torchvision-
# style training scripts: "state_dict"; others "net", "model_state_dict")
HOLDERS = ("model", "state_dict", "model_state_dict", "net", "student", "teacher")

# a DataParallel/DDP-wrapped or compiled model saved as it was
PREFIXES = ("module.", "_orig_mod.")


def _wrn_xternalz(key: str) -> str:
    """xternalz/WideResNet-pytorch's names, kept by RepDistiller (models/wrn.py) and ZSKT's reference
    (polo5/ZeroShotKnowledgeTransfer): block{g}.layer.{i}.convShortcut, a final bn1 -> ours."""
    key = re.sub(r"^block(\d)\.layer\.(\d+)\.", r"group\1.\2.", key)
    key = re.sub(r"^(group\d\.\d+)\.convShortcut\.", r"\1.shortcut.", key)
    return re.sub(r"^bn1\.", "bn.", key)


LAYOUTS = {
    "toolbox": lambda key: key,
    "repdistiller-wrn": _wrn_xternalz,
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: Path) -> tuple[dict, str]:
    """The tensors of ``path`` and where in the file they were (``model``, ``state_dict``, the top level)."""
    import pickle

    import torch

    if tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2]) < (2, 6):
        raise UsageError(f"toolbox import needs torch >= 2.6 (its weights_only loader); this is {torch.__version__}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(str(e))
        if "global" not in reason.lower():  # not a pickle at all (e.g. "Unsupported operand 110")
            raise UsageError(f"{path} is not a PyTorch checkpoint torch.load can read ({reason[:160] or e})") from None
        raise UsageError(f"{path} holds more than tensors and plain containers ({reason[:160]}); toolbox import "
                         "reads weights only and never runs code from a file: save the state dict alone "
                         "(torch.save(model.state_dict(), ...)) and import that") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UsageError(f"{path} is not a PyTorch checkpoint torch.load can read ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    where = "the top level"
    if isinstance(loaded, dict):
        holder = next((h for h in HOLDERS if isinstance(loaded.get(h), dict)), None)
        if holder is not None:
            loaded, where = loaded[holder], f"its '{holder}' entry"
    if not isinstance(loaded, dict) or not loaded:
        raise UsageError(f"{path} holds no state dict (a dict of tensors at the top level or under "
                         f"{', '.join(repr(h) for h in HOLDERS)})")
    others = sorted(str(k) for k, v in loaded.items() if not isinstance(v, torch.Tensor))
    if others:
        raise UsageError(f"the state dict in {where} of {path} holds non-tensor entries ({', '.join(others[:4])}"
                         f"{' and more' if len(others) > 4 else ''}); toolbox import accepts tensors only")
    state = {}
    for key, value in loaded.items():
        for prefix in PREFIXES:
            key = key.removeprefix(prefix)
        state[key] = value
    return state, where


def _unpickler_reason(text: str) -> str:
    """The restricted unpickler's own reason inside torch's message, without its advice (which is to
    load with weights_only=False: exactly what must never be done with a downloaded file)."""
    text = text.partition("trusted source.")[2] or text
    text = text.partition("Check the documentation")[0]
    text = text.rpartition("WeightsUnpickler error:")[2] or text
    return " ".join(text.split())


def _some(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")


def match(state: dict, model) -> tuple[dict, str]:
    """``state`` renamed onto ``model``'s keys by the one layout that fits exactly, and its name."""
    ours = model.state_dict()
    tried = []
    for name, rename in LAYOUTS.items():
        renamed = {rename(k): v for k, v in state.items()}
        missing, unexpected = set(ours) - set(renamed), set(renamed) - set(ours)
        if not missing and not unexpected:
            wrong = [k for k in ours if tuple(ours[k].shape) != tuple(renamed[k].shape)]
            if wrong:
                k = wrong[0]
                raise UsageError(f"{k} is {list(renamed[k].shape)} in the checkpoint but {list(ours[k].shape)} in "
                                 f"the architecture ({len(wrong)} tensor(s) differ): check --arch and --dataset "
                                 "(classes, channels, image size)")
            return renamed, name
        tried.append((len(missing) + len(unexpected), name, missing, unexpected))
    _, name, missing, unexpected = min(tried, key=lambda t: t[0])
    parts = ([f"missing {_some(missing)}"] if missing else []) + ([f"unexpected {_some(unexpected)}"] if unexpected else [])
    raise UsageError(f"the checkpoint's keys do not match the architecture (closest layout '{name}': "
                     f"{'; '.join(parts)}); check --arch, or the checkpoint's repository is not one of "
                     f"{', '.join(LAYOUTS)}")


def import_checkpoint(path, arch: str, dataset: str, out, arch_kwargs: dict | None = None) -> dict:
    """Write the model folder ``out`` from checkpoint ``path`` for architecture ``arch`` on ``dataset``."""
    import torch

    from . import artifacts, plugins
    from .models import build_for
    from .runs import check_new_run_dir

    path, out = Path(path), Path(out)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    registry = plugins.load().registry
    spec = registry.dataset(dataset)  # an unknown name lists the valid ones
    registry.architecture(arch)
    check_new_run_dir(out)
    digest = sha256(path)
    state, where = read_state_dict(path)
    model = build_for(arch, spec, **(arch_kwargs or {}))
    renamed, layout = match(state, model)
    with torch.no_grad():
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in renamed.items()}, strict=True)
    out.mkdir(parents=True, exist_ok=True)
    artifacts.atomic_write_text(out / "README.md", (
        f"# {arch} on {spec.name}, imported\n\nWeights imported by `toolbox import` from `{path.name}` "
        f"(sha256 `{digest}`, {where}, key layout '{layout}'); not trained by toolbox.\n\n"
        f"- dataset: {spec.name}\n- input shape: {list(spec.shape)}\n"
        f"- normalisation: mean {list(spec.mean)}, std {list(spec.std)}\n\n"
        f"Test it: `toolbox evaluate {out}`\n"))
    provenance = {"imported_from": {"file": path.name, "sha256": digest, "entry": where, "layout": layout}}
    artifacts.save_model(out, model, arch=arch, arch_kwargs=arch_kwargs or {}, dataset=spec, method="supervised",
                         extra=provenance)
    return {"out": str(out), "architecture": arch, "dataset": spec.name, "tensors": len(renamed), **provenance}
