"""``toolbox evaluate <condensation run>``: the condensed set, and optionally the coreset baselines,
under one evaluation protocol (the one stored with the run unless options change it) and the run's
speed section, resolved for the device evaluating (auto means there what it means for a run there;
on the device the run used, evaluation repeats its numbers). The report names the resolved settings."""

from __future__ import annotations

import functools
from dataclasses import fields, replace

from toolbox.errors import UsageError
from toolbox.evaluation import number_option
from toolbox.recipes import MAX_SEED, MAX_STEPS

from .evaluator import Protocol, evaluate_set
from .recipe import check_strategy

OPTIONS = ("models", "epochs", "augment", "seed", "baselines", "metric")


def _protocol(config: dict, options: dict) -> Protocol:
    stored = config.get("protocol") or {}
    protocol = Protocol(**{f.name: stored[f.name] for f in fields(Protocol) if f.name in stored})
    changes = {}
    for key, most in (("models", 10_000), ("epochs", MAX_STEPS)):
        if options.get(key) is not None:
            changes[key] = number_option(options, key, None, 1, most)
    if options.get("augment") is not None:
        try:
            changes["augment"] = check_strategy(str(options["augment"]))
            if changes["augment"] == "auto":  # the dataset's own DSA strategy, as in the recipe
                from .augment import default_strategy

                changes["augment"] = default_strategy(config.get("dataset", ""))
        except ValueError as e:
            raise UsageError(f"--augment: {e}") from None
    return replace(protocol, **changes)


def _speed(config: dict, device):
    """The recipe's speed section stored with the protocol (auto for runs from before it was), resolved for ``device``."""
    from pydantic import ValidationError

    from toolbox.speed import Speed, resolve

    try:
        section = Speed.model_validate((config.get("protocol") or {}).get("speed") or {})
    except ValidationError as e:
        raise UsageError(f"config.json's protocol.speed is not a speed section ({e.errors()[0]['msg']}); "
                         "delete the key to evaluate at the defaults") from None
    return resolve(section, device)


def evaluate_condensed(source, options: dict, device) -> dict:
    import torch

    from toolbox.artifacts import CONDENSED_FORMAT, load_synthetic, read_config
    from toolbox.data import load
    from toolbox.models import build_for

    from . import baselines

    unknown = sorted(k for k, v in options.items() if v is not None and k not in OPTIONS)
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join('--' + k for k in unknown)}; valid: "
                         f"{', '.join('--' + k for k in OPTIONS if k != 'metric')}")
    config = read_config(source.path)
    if config.get("format") != CONDENSED_FORMAT:
        raise UsageError(f"{source.ref} is not a condensation run (config.json format is "
                         f"'{config.get('format')}'); pass a folder written by `toolbox condense`")
    # --metric dc|dsa|dm routes a run here explicitly; the number is still the accuracy
    if options.get("metric") not in (None, "accuracy", "dc", "dsa", "dm"):
        raise UsageError(f"a condensed set is evaluated by accuracy only, not '{options['metric']}'")
    names = [b.strip() for b in (options.get("baselines") or "").split(",") if b.strip()]
    bad = [b for b in names if b not in baselines.NAMES]
    if bad:
        raise UsageError(f"unknown baseline(s) {', '.join(bad)}; valid: {', '.join(baselines.NAMES)}")
    synthetic = load_synthetic(source)
    data = load(config["dataset"])
    protocol = _protocol(config, options)
    speed = _speed(config, device)
    seed = number_option(options, "seed", None, 0, MAX_SEED)
    seed = int((config.get("protocol") or {}).get("seed", 0)) if seed is None else seed
    ipc = int(config["ipc"])
    result = evaluate_set(synthetic.images, synthetic.labels, data, protocol, seed, device, speed=speed)
    metrics = {"accuracy": result["accuracy"], "accuracy_std": result["accuracy_std"]}
    table = {}
    if names:
        build = functools.partial(build_for, protocol.arch, data.spec)
        generator = torch.Generator().manual_seed(seed)
        for name in names:
            x, y = baselines.select(name, data, ipc, protocol, seed, device, build, generator)
            r = evaluate_set(x, y, data, protocol, seed, device, build, speed=speed)
            metrics[f"{name}_accuracy"] = r["accuracy"]
            metrics[f"{name}_accuracy_std"] = r["accuracy_std"]
            table[name] = {"accuracy": r["accuracy"], "accuracy_std": r["accuracy_std"],
                           "images": int(x.shape[0]), "accuracies": r["accuracies"]}
    described = {**protocol.describe(), "seed": seed, "ipc": ipc, "dataset": data.name,
                 "note": (config.get("protocol") or {}).get("note", ""), "speed": speed.record()}
    out = {"metrics": metrics, "protocol": described, "accuracies": result["accuracies"]}
    if table:
        out["baselines"] = table
    return out
