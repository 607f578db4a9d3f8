"""Bad input through every verb: each row is one command line that must be refused with exit code 1 or 2,
exactly one non-empty line on stderr (no traceback, no internal exception's text), and no file created or
changed outside the run directory the row allows (for a refused command: none at all).

To add a case, append a Case to ROWS. Paths in ``args`` are relative to the test's folder, which holds the
FIXTURES: a finished run, a condensed set and a collection of broken artifacts and recipes. ``out`` names
the one folder a row may create (a run that starts and then fails); ``expect`` is a substring of the line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolbox import plugins
from toolbox.cli import cli

# how core reports an exception nobody turned into a sentence: "unexpected KeyError: ..." or "plugin 'x' crashed"
PASSED_THROUGH = re.compile(r"unexpected \w+(Error|Exception)\b|crashed in|Errno|\[enforce fail")

MLP = ("--device", "cpu", "--threads", "1")  # every run row fails before training; these keep it cheap if not


@dataclass
class Case:
    id: str
    args: tuple[str, ...]
    expect: str  # a substring of the one stderr line
    code: int = 2  # 2 = bad usage, 1 = the work failed
    env: dict[str, str] = field(default_factory=dict)
    out: str | None = None  # the only path this command may create or change


def case(id, *args, expect, code=2, env=None, out=None):
    return Case(id, tuple(args), expect, code, env or {}, out)


ROWS = [
    # --- the command line itself ----------------------------------------------------------------
    case("no-such-verb", "trian", expect="No such command 'trian'. Did you mean 'train'?"),
    case("no-such-global-option", "--bogus", "methods", expect="No such option '--bogus'"),
    case("train-no-method", "train", expect="name a method: toolbox train METHOD"),
    case("train-unknown-method", "train", "supervisd", expect="unknown method 'supervisd' (did you mean 'supervised'?)"),
    case("train-method-of-other-verb", "train", "dc", expect="method 'dc' does not support 'train'"),
    case("distill-supervised", "distill", "supervised", expect="method 'supervised' does not support 'distill'"),
    case("condense-no-dataset", "condense", expect="name a dataset: toolbox condense DATASET"),
    case("condense-unknown-dataset", "condense", "digitz", *MLP, expect="unknown dataset 'digitz'"),
    case("condense-non-condensing-method", "condense", "digits", "--method", "supervised",
         expect="method 'supervised' does not support 'condense'"),
    case("unknown-method-option", "train", "supervised", "--epochz", "3", expect="no such option '--epochz' for this method"),
    case("method-option-without-value", "train", "supervised", "--epochs", expect="option '--epochs' needs a value"),
    case("flag-with-value", "train", "sam", "--adaptive=yes", expect="option '--adaptive' is a flag and takes no value"),
    case("stray-argument", "train", "supervised", "--epochs", "1", "oops", expect="unexpected argument 'oops'"),
    case("unknown-device", "train", "supervised", "--device", "tpu", expect="unknown device 'tpu'"),
    case("cuda-without-cuda", "train", "supervised", "--device", "cuda:7", expect="CUDA"),
    case("threads-zero", "train", "supervised", "--threads", "0", expect="'--threads': must be an integer from 1 to 1024 (got 0)"),
    case("threads-negative", "train", "supervised", "--threads", "-1", expect="must be an integer from 1 to 1024 (got -1)"),
    case("threads-huge", "condense", "digits", "--threads", "100000", expect="must be an integer from 1 to 1024"),
    case("threads-not-a-number", "train", "supervised", "--threads", "many", expect="'many' is not a valid integer"),
    case("evaluate-threads-negative", "evaluate", "run", "--threads", "-1", expect="must be an integer from 1 to 1024"),
    case("seed-not-a-number", "train", "supervised", "--seed", "x", expect="'x' is not a valid integer"),
    case("seed-negative", "train", "supervised", "--seed", "-1", *MLP,
         expect="recipe key 'seed' (--seed) in recipe supervised/digits: must be an integer from 0 to 4294967295"),
    case("resume-with-overrides", "train", "--resume", "run", "-o", "epochs=3", expect="--resume continues a run"),

    # --- numbers out of range, through -o and through the method's shortcut options -----------------
    case("batch-size-negative", "train", "supervised", "-o", "data.batch_size=-1", *MLP,
         expect="recipe key 'data.batch_size' (--batch-size) in recipe supervised/digits: must be an integer from 1 to 1000000 (got -1)"),
    case("batch-size-zero-option", "train", "supervised", "--batch-size", "0", *MLP,
         expect="'data.batch_size' (--batch-size) in recipe supervised/digits: must be an integer from 1 to 1000000 (got 0)"),
    case("epochs-zero", "train", "supervised", "--epochs", "0", *MLP, expect="'epochs' (--epochs) in recipe supervised/digits: "
                                                                              "must be an integer from 1 to 10000000 (got 0)"),
    case("epochs-negative", "train", "supervised", "-o", "epochs=-5", *MLP, expect="must be an integer from 1 to 10000000 (got -5)"),
    case("epochs-absurd", "train", "supervised", "-o", "epochs=1e20", *MLP, expect="must be an integer from 1 to 10000000 (got 1e+20)"),
    case("epochs-fraction", "train", "supervised", "--epochs", "2.5", *MLP, expect="must be an integer from 1 to 10000000 (got 2.5)"),
    case("epochs-boolean", "train", "supervised", "-o", "epochs=true", *MLP, expect="must be an integer from 1 to 10000000 (got True)"),
    case("epochs-word", "train", "supervised", "--epochs", "many", *MLP, expect="recipe key 'epochs' (--epochs)"),
    case("eval-every-zero", "train", "supervised", "-o", "eval_every=0", *MLP, expect="'eval_every' in recipe supervised/digits: "
                                                                                       "must be an integer from 1 to 10000000"),
    case("checkpoint-every-negative", "train", "supervised", "-o", "checkpoint_every=-1", *MLP, expect="'checkpoint_every'"),
    case("lr-negative", "train", "supervised", "--lr", "-0.1", *MLP, expect="'optim.lr' (--lr) in recipe supervised/digits: "
                                                                             "must be a number > 0 and <= 10 (got -0.1)"),
    case("lr-nan", "train", "supervised", "-o", "optim.lr=.nan", *MLP, expect="must be a number > 0 and <= 10 (got nan)"),
    case("lr-inf", "train", "supervised", "-o", "optim.lr=.inf", *MLP, expect="must be a number > 0 and <= 10 (got inf)"),
    case("momentum-one", "train", "supervised", "-o", "optim.momentum=1.5", *MLP, expect="must be a number >= 0 and < 1 (got 1.5)"),
    case("weight-decay-negative", "train", "supervised", "-o", "optim.weight_decay=-1e-4", *MLP, expect="'optim.weight_decay'"),
    case("milestones-negative", "train", "supervised", "-o", "schedule.milestones=[3, -1]", *MLP,
         expect="'schedule.milestones' in recipe supervised/digits: each element must be an integer from 1 to 10000000 (got -1)"),
    case("milestones-decreasing", "train", "supervised", "-o", "schedule.milestones=[5, 3]", *MLP, expect="must increase strictly"),
    case("gamma-zero", "train", "supervised", "-o", "schedule.gamma=0", *MLP, expect="'schedule.gamma'"),
    case("crop-padding-negative", "train", "supervised", "-o", "data.crop_padding=-4", *MLP, expect="'data.crop_padding'"),
    case("sam-rho-negative", "train", "sam", "--rho", "-1", *MLP, expect="'sam.rho' (--rho) in recipe sam/digits: "
                                                                         "must be a number from 0 to 100 (got -1)"),
    case("sam-eta-negative", "train", "sam", "--eta", "-2", *MLP, expect="'sam.eta' (--eta)"),
    case("sam-label-noise-one", "train", "sam", "--label-noise", "1", *MLP, expect="'data.label_noise' (--label-noise) in recipe "
                                                                                   "sam/digits: must be a number >= 0 and < 1"),
    case("kd-shots-negative", "distill", "kd", "--shots", "-3", *MLP, expect="'data.shots' (--shots) in recipe kd/digits: "
                                                                             "must be an integer from 0 to 1000000 (got -3)"),
    case("kd-epochs-zero", "distill", "kd", "--epochs", "0", *MLP, expect="'schedule.epochs' (--epochs)"),
    case("kd-alpha-above-one", "distill", "kd", "-o", "loss.alpha=1.5", *MLP, expect="'loss.alpha' in recipe kd/digits: "
                                                                                      "must be a number from 0 to 1 (got 1.5)"),
    case("kd-temperature-zero", "distill", "kd", "-o", "loss.temperature=0", *MLP, expect="'loss.temperature'"),
    case("zskt-iterations-negative", "train", "zskt", "--iterations", "-1", *MLP,
         expect="'iterations' (--iterations) in recipe zskt/digits: must be an integer from 1 to 10000000 (got -1)"),
    case("zskt-student-steps-zero", "distill", "zskt", "-o", "student_steps=0", *MLP, expect="'student_steps'"),
    case("zskt-eval-every-negative", "distill", "zskt", "-o", "eval_every=-1", *MLP, expect="'eval_every'"),
    case("zskt-z-dim-zero", "distill", "zskt", "-o", "generator.z_dim=0", *MLP, expect="'generator.z_dim'"),
    case("condense-ipc-zero", "condense", "digits", "--ipc", "0", *MLP, expect="'ipc' (--ipc) in recipe condense/digits-dc-ipc1: "
                                                                              "must be an integer from 1 to 100000 (got 0)"),
    case("condense-iterations-negative", "condense", "digits", "--iterations", "-1", *MLP, expect="'iterations' (--iterations)"),
    case("condense-eval-models-zero", "condense", "digits", "-o", "eval.models=0", *MLP, expect="'eval.models'"),
    case("condense-eval-epochs-absurd", "condense", "digits", "-o", "eval.epochs=100000000", *MLP, expect="'eval.epochs'"),
    case("condense-log-every-zero", "condense", "digits", "--method", "dm", "-o", "log_every=0", *MLP, expect="'log_every'"),
    case("fds-lrs-zero", "train", "fds", "--lrs", "0", *MLP, expect="'hyper.num_lrs' (--lrs)"),
    case("fds-val-fraction-one", "train", "fds", "-o", "data.val_fraction=1", *MLP, expect="'data.val_fraction'"),
    case("fds-outer-steps-negative", "train", "fds", "--outer-steps", "-2", *MLP, expect="'outer_steps' (--outer-steps)"),
    case("fds-speed-bf16", "train", "fds", "-o", "speed.amp=bf16", *MLP, expect="speed.amp=bf16 does not apply here"),

    case("arch-kwargs-unknown", "train", "supervised", "--arch", "mlp", "-o", "model.kwargs={nosuch: 1}", *MLP,
         expect="architecture 'mlp' takes no 'nosuch' in its kwargs; it takes: hidden, depth"),
    case("student-kwargs-unknown", "distill", "kd", "-o", "student.kwargs={widen: 3}", *MLP, expect="takes no 'widen'"),
    case("condense-strategy-typo", "condense", "digits", "--method", "dsa", "-o", "augment.strategy=color_crp", *MLP,
         expect="recipe key 'augment.strategy' in recipe condense/digits-dsa-ipc1: augmentation strategy 'color_crp'"),
    case("condense-eval-augment-typo", "condense", "digits", "-o", "eval.augment=nosuch", *MLP, expect="'eval.augment'"),
    case("schedule-file-missing", "train", "supervised", "-o", "schedule.kind=file", *MLP,
         expect="schedule.file 'None' is not a schedule.json"),
    case("schedule-file-not-a-schedule", "train", "sam", "-o", "schedule.kind=file", "-o", "schedule.file=run", *MLP,
         expect="schedule.file 'run' is not a schedule.json or a run directory holding one"),
    case("teacher-missing", "distill", "kd", "--teacher", "nowhere", *MLP, expect="teacher.source: nowhere does not exist"),
    case("teacher-condensed-set", "distill", "zskt", "--teacher", "syn", *MLP,
         expect="teacher.source: syn is a toolbox-condensed artifact, not a model"),
    case("teacher-garbage-config", "distill", "kd", "--teacher", "garbage-config", *MLP, expect="is not valid JSON", code=1),
    case("teacher-absurd-classes", "distill", "zskt", "--teacher", "huge-classes", *MLP, expect="'num_classes'", code=1),
    case("teacher-recipe-unknown", "distill", "zskt", "-o", "teacher.recipe=nosuch", *MLP,
         expect="teacher.recipe: recipe 'nosuch' is neither a file nor a known recipe"),
    case("out-below-a-file", "train", "supervised", "--out", "syn/config.json/run", *MLP,
         expect="cannot use syn/config.json/run", code=1),

    # checked by the method once its run directory exists: only that folder may appear
    case("condense-ipc-above-smallest-class", "condense", "digits", "--ipc", "5000", "--init", "real", "--out", "big-ipc", *MLP,
         expect="ipc must be between 1 and 131 (the smallest class of digits), got 5000", out="big-ipc"),
    case("kd-shots-above-class-size", "distill", "kd", "--teacher", "run", "--student", "mlp", "--shots", "100000",
         "--out", "many-shots", *MLP, expect="--shots 100000 is more than class 0 has", out="many-shots"),
    case("kd-unknown-distiller", "distill", "kd", "--loss", "kd+crdd", *MLP, expect="(got 'kd+crdd'); did you mean 'kd+crd'?"),
    case("kd-distiller-untapped-student", "distill", "kd", "--teacher", "run", "--student", "mlp", "--loss", "kd+pkt",
         "--out", "zoo-mlp", *MLP, expect="student architecture 'mlp' names no feature taps for the distillers", out="zoo-mlp"),
    case("kd-distiller-missing-tap", "distill", "kd", "--teacher", "run", "--student", "wrn-16-1", "--loss", "pkt",
         "-o", "loss.student_layers=[conv1, group9, fc:in]", "--out", "zoo-tap", *MLP,
         expect="student 'wrn-16-1' has no module 'group9' to tap; valid module paths include: conv1, group1", out="zoo-tap"),
    case("dataset-not-on-disk", "train", "supervised", "--arch", "mlp", "--dataset", "mnist", "--out", "no-data", *MLP,
         expect="dataset 'mnist' is missing", out="no-data"),

    # --- recipes ------------------------------------------------------------------------------------
    case("recipe-unknown-name", "train", "supervised", "-r", "supervised/digitz", *MLP, expect="is neither a file nor a known recipe"),
    case("recipe-unknown-key", "train", "supervised", "-o", "optim.lrr=0.1", *MLP, expect="unknown recipe key 'optim.lrr'"),
    case("recipe-malformed-override", "train", "supervised", "-o", "epochs", *MLP, expect="is not of the form key.sub=value"),
    case("recipe-method-override", "train", "supervised", "-o", "method=zskt", *MLP, expect="'method' key cannot be overridden"),
    case("recipe-of-another-method", "train", "supervised", "-r", "zskt/digits", *MLP, expect="is for method 'zskt'"),
    case("recipe-duplicate-key", "train", "supervised", "-r", "recipes/dup.yaml", *MLP,
         expect="key 'lr' is given twice, at lines 4 and 6"),
    case("recipe-invalid-yaml", "train", "supervised", "-r", "recipes/broken.yaml", *MLP, expect="is not valid YAML at line"),
    case("recipe-python-tag", "train", "supervised", "-r", "recipes/evil.yaml", *MLP, expect="is not valid YAML"),
    case("recipe-a-list", "train", "supervised", "-r", "recipes/list.yaml", *MLP, expect="must be a mapping of keys to values"),
    case("recipe-not-text", "train", "supervised", "-r", "recipes/binary.yaml", *MLP, expect="is not a text file"),
    case("recipe-section-not-mapping", "train", "supervised", "-o", "optim=3", *MLP, expect="recipe key 'optim'"),
    case("recipe-unknown-choice", "train", "supervised", "-o", "schedule.kind=exponential", *MLP, expect="'schedule.kind'"),
    case("recipe-unknown-arch", "train", "supervised", "--arch", "wrn-16-9", "--epochs", "1", *MLP,
         expect="unknown architecture 'wrn-16-9'"),
    case("recipe-a-folder", "train", "supervised", "-r", "recipes", *MLP, expect="recipe 'recipes' is neither a file"),

    # --- ignored input is refused -------------------------------------------------------------------
    case("condense-two-datasets", "condense", "digits", "--dataset", "mnist", *MLP, expect="two datasets given, 'digits' and 'mnist'"),
    case("condense-two-datasets-override", "condense", "digits", "-o", "data.dataset=mnist", *MLP, expect="two datasets given"),
    case("data-of-another-dataset", "train", "supervised", "--data", "syn", "--dataset", "mnist", *MLP,
         expect="data.synthetic (--data) syn is a condensed set of 'digits' but data.dataset (--dataset) is 'mnist'"),
    case("data-missing", "train", "supervised", "--data", "nowhere", *MLP, expect="nowhere does not exist"),
    case("data-not-condensed", "train", "supervised", "--data", "run", *MLP, expect="is not a condensed set", code=2),

    # --- resume ---------------------------------------------------------------------------------------
    case("resume-not-a-run", "train", "--resume", "recipes", *MLP, expect="is not a run directory (no run.json)"),
    case("resume-missing", "train", "--resume", "nowhere", *MLP, expect="nowhere is not a run directory"),
    case("resume-finished", "train", "--resume", "run", *MLP, expect="already finished; nothing to resume"),
    case("resume-garbage-run-json", "train", "--resume", "garbage-run", *MLP, expect="run.json is not valid JSON", code=1),
    case("resume-run-json-not-a-run", "train", "--resume", "listed-run", *MLP, expect="run.json", code=1),

    # --- evaluate -----------------------------------------------------------------------------------
    case("evaluate-missing", "evaluate", "nowhere", expect="nowhere does not exist"),
    case("evaluate-empty-folder", "evaluate", "empty", expect="has no config.json", code=1),
    case("evaluate-pickle-only", "evaluate", "pickled", expect="holds only pickled weights", code=1),
    case("evaluate-garbage-config", "evaluate", "garbage-config", expect="config.json is not valid JSON", code=1),
    case("evaluate-config-not-toolbox", "evaluate", "foreign-config", expect="is not a toolbox config", code=1),
    case("evaluate-config-absurd-classes", "evaluate", "huge-classes", expect="'num_classes'", code=1),
    case("evaluate-config-negative-shape", "evaluate", "negative-shape", expect="'input_shape'", code=1),
    case("evaluate-config-classes-word", "evaluate", "word-classes", expect="'num_classes'", code=1),
    case("evaluate-config-unknown-arch", "evaluate", "unknown-arch", expect="names an architecture no installed plugin provides",
         code=1),
    # a plain classifier of an uninstalled method is evaluated by core (test_evaluate_without_plugin.py)
    case("evaluate-config-unknown-method", "evaluate", "unknown-method",
         expect="unknown-method was made by method 'nosuch', which is not available here; no installed plugin provides it"),
    case("evaluate-config-unknown-dataset", "evaluate", "unknown-dataset", expect="unknown dataset 'nosuch'"),
    case("evaluate-truncated-weights", "evaluate", "truncated", expect="is corrupt or truncated", code=1),
    case("evaluate-weights-of-another-arch", "evaluate", "other-arch", expect="weights do not match architecture", code=1),
    case("evaluate-unknown-option", "evaluate", "run", "--baselines", "random", expect="does not take --baselines"),
    case("evaluate-unknown-metric", "evaluate", "run", "--metric", "loss", expect="--metric accuracy, not 'loss'"),
    case("evaluate-condense-metric-on-model", "evaluate", "run", "--metric", "dc", expect="is not a condensation run"),
    case("evaluate-condensed-unknown-baseline", "evaluate", "syn", "--baselines", "nosuch", expect="unknown baseline(s) nosuch"),
    case("evaluate-condensed-models-word", "evaluate", "syn", "--models", "few", expect="--models must be an integer"),
    case("evaluate-condensed-models-zero", "evaluate", "syn", "--models", "0", expect="--models"),
    case("evaluate-condensed-epochs-negative", "evaluate", "syn", "--epochs", "-3", expect="--epochs"),
    case("evaluate-leakage-iters-negative", "evaluate", "run", "--metric", "gradient-leakage", "--iters", "-1",
         expect="--n and --iters must be at least 1"),
    case("evaluate-leakage-mode", "evaluate", "run", "--metric", "gradient-leakage", "--mode", "xyz", expect="--mode must be idlg or dlg"),
    case("evaluate-leakage-n-word", "evaluate", "run", "--metric", "gradient-leakage", "--n", "ten", expect="take integers"),
    case("evaluate-hessian-iters-negative", "evaluate", "run", "--metric", "hessian", "--iters", "-1", expect="--iters"),
    case("evaluate-hessian-samples-zero", "evaluate", "run", "--metric", "hessian", "--samples", "0", expect="--samples"),
    case("evaluate-hessian-split", "evaluate", "run", "--metric", "hessian", "--split", "val", expect="--split must be train or test"),
    case("evaluate-condensed-augment-typo", "evaluate", "syn", "--augment", "nosuch",
         expect="--augment: augmentation strategy 'nosuch'"),
    case("evaluate-condensed-seed-negative", "evaluate", "syn", "--seed", "-1", expect="--seed must be an integer from 0 to"),
    case("evaluate-leakage-seed-negative", "evaluate", "run", "--metric", "gradient-leakage", "--seed", "-1",
         expect="--seed must be 0 or more"),
    case("evaluate-hessian-tol-nan", "evaluate", "run", "--metric", "hessian", "--tol", "nan", expect="--tol must be a number"),
    case("evaluate-hessian-flag-without-value", "evaluate", "run", "--metric", "hessian", "--iters",
         expect="--iters must be an integer from 1 to 10000000 (got 'True')"),
    case("evaluate-leakage-n-fraction", "evaluate", "run", "--metric", "gradient-leakage", "--n", "1.5",
         expect="take integers"),
    case("evaluate-out-below-a-file", "evaluate", "run", "--out", "syn/config.json/eval", expect="cannot use syn/config.json",
         code=1),
    case("evaluate-config-weights-outside", "evaluate", "outside-weights",
         expect="'weights' must be a .safetensors file name inside the artifact's folder", code=1),
    case("evaluate-config-zero-std", "evaluate", "zero-std", expect="'std' each element must be a number > 0", code=1),
    case("evaluate-config-channels-mismatch", "evaluate", "two-std", expect="need one value per input channel", code=1),
    case("evaluate-config-lacks-classes", "evaluate", "no-classes", expect="lacks 'num_classes'", code=1),
    case("evaluate-bad-hub-ref", "evaluate", "hf-hub:not a repo", expect="is not a Hub reference"),

    # --- never over a user's files or another run's: --out, export targets, --resume of another method -------
    case("out-non-empty-folder", "train", "supervised", "--out", "mine", *MLP, expect="mine is not empty and holds no run"),
    case("out-a-finished-run", "train", "supervised", "--out", "run", *MLP, expect="already holds a run"),
    case("out-filesystem-root", "train", "supervised", "--out", "/", *MLP, expect="the filesystem root"),
    case("out-above-here", "condense", "digits", "--out", "..", *MLP, expect="is a folder above the current directory"),
    case("resume-other-method", "distill", "kd", "--resume", "halfway", *MLP, expect="not `toolbox distill kd`"),
    case("resume-other-verb", "condense", "--resume", "halfway", *MLP, expect="not `toolbox condense"),
    case("export-over-a-runs-model", "export", "run", "-o", "other/model.safetensors",
         expect="export never replaces those files, even with --force"),
    case("export-side-json-over-config", "export", "run", "--format", "torch-export", "-o", "run/config.pt2",
         expect="config.json"),
    case("export-over-a-users-file", "export", "run", "-o", "mine/notes.safetensors", expect="--force"),

    # --- export ---------------------------------------------------------------------------------------
    case("export-missing", "export", "nowhere", expect="nowhere does not exist"),
    case("export-condensed-set", "export", "syn", expect="is a toolbox-condensed artifact, not a model"),
    case("export-unknown-format", "export", "run", "--format", "pickle", expect="Invalid value for '--format'"),
    case("export-garbage-config", "export", "garbage-config", expect="config.json is not valid JSON", code=1),
    case("export-config-absurd-classes", "export", "huge-classes", expect="'num_classes'", code=1),

    # --- the Hub (no network: every row fails before a request) --------------------------------------
    case("pull-no-ref", "pull", expect="Missing argument 'REF'"),
    case("pull-not-a-ref", "pull", "not a repo", expect="is not a Hub reference"),
    case("pull-no-name", "pull", "org", expect="'hf-hub:org' is not a Hub reference"),
    case("pull-empty-name", "pull", "org/", expect="is not a Hub reference"),
    case("pull-path-traversal", "pull", "../etc/passwd", expect="is not a Hub reference"),
    case("pull-bad-repo-type", "pull", "org/name", "--repo-type", "space", expect="Invalid value for '--repo-type'"),
    case("push-missing-run", "push", "nowhere", "org/name", expect="'nowhere' does not exist"),
    case("push-not-an-artifact", "push", "empty", "org/name", expect="has no config.json", code=1),
    case("push-bad-repo", "push", "run", "not a repo", expect="is not a Hub reference"),
    case("push-garbage-run-json", "push", "garbage-run-model", "org/name", expect="run.json is not valid JSON", code=1),
    case("push-garbage-config", "push", "garbage-config", "org/name", expect="config.json is not valid JSON", code=1),

    # --- listing verbs and packages ---------------------------------------------------------------
    case("plugins-extra-argument", "plugins", "supervised", expect="Got unexpected extra argument (supervised)"),
    case("methods-extra-argument", "methods", "zskt", expect="Got unexpected extra argument (zskt)"),
    case("datasets-bad-option", "datasets", "--all", expect="No such option '--all'"),
    # --- image folders as datasets (fixtures: *-photos) -------------------------------------------
    case("datasets-empty-folder", "datasets", "./empty-photos", expect="empty-photos holds no class subfolders",
         code=1),
    case("datasets-class-without-images", "datasets", "./hollow-photos", expect="class9 holds no images", code=1),
    case("datasets-mixed-channels", "datasets", "./mixed-photos", expect="mixes channel counts: 1 grayscale image(s)",
         code=1),
    case("datasets-no-such-folder", "datasets", "./no-photos", expect="is neither a registered dataset", code=2),
    case("condense-no-such-folder", "condense", "./no-photos", *MLP, expect="nor a folder", code=2),
    case("train-corrupt-image", "train", "supervised", "--dataset", "./corrupt-photos", "--arch", "mlp", *MLP,
         "--out", "bad-image-run", expect="img0002.png is not a readable image", code=1, out="bad-image-run"),
    case("recipes-two-patterns", "recipes", "a", "b", expect="Got unexpected extra argument (b)"),
    case("models-bad-option", "models", "--jsn", expect="No such option '--jsn'"),
    case("show-not-a-run", "show", "mine", expect="is not a run directory (no run.json)"),
    case("compare-no-runs", "compare", "mine", expect="no finished runs to compare (mine: not a run directory)"),
    case("compare-run-without-summary", "compare", "run", expect="no finished runs to compare (run: finished but holds no summary.json)"),
    case("compare-empty-by", "compare", "run", "--by", ",", expect="--by needs at least one key"),
    case("import-missing", "import", "nowhere.pth", "--arch", "mlp", "--dataset", "digits", "--out", "imp",
         expect="checkpoint nowhere.pth does not exist"),
    case("import-not-a-checkpoint", "import", "run/config.json", "--arch", "mlp", "--dataset", "digits", "--out", "imp",
         expect="run/config.json is not a PyTorch checkpoint torch.load can read"),
    case("import-unknown-arch", "import", "run/config.json", "--arch", "resnet33", "--dataset", "digits", "--out", "imp",
         expect="unknown architecture 'resnet33'"),
    case("nproc-zero", "train", "supervised", "--nproc", "0", expect="must be an integer from 1 to 1024 (got 0)"),
    case("show-garbage-run-json", "show", "garbage-run", expect="run.json is not valid JSON", code=1),
    case("install-nothing", "install", expect="name a package or -e PATH"),
    case("install-bad-name", "install", "foo;rm -rf ~", expect="is not a package name"),
    case("install-option-as-name", "install", "--index-url=http://evil", expect="No such option"),
    case("install-editable-missing", "install", "-e", "nowhere", expect="'nowhere' does not exist"),
    case("uninstall-nothing", "uninstall", expect="Missing argument"),
    case("uninstall-not-installed", "uninstall", "toolbox-nosuch-plugin", expect="is not installed"),
    case("uninstall-bad-name", "uninstall", "a b", expect="is not a package name"),
]


# --- fixtures ----------------------------------------------------------------------------------------


def _build_fixtures(root: Path) -> None:
    import torch

    from toolbox import data
    from toolbox.artifacts import save_model, save_synthetic
    from toolbox.registry import current

    digits = data.load("digits")
    torch.manual_seed(0)
    mlp = current().architecture("mlp")(num_classes=10, in_channels=1, image_size=8)

    run = root / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"method": "supervised", "verb": "train", "status": "finished"}))
    (run / "recipe.yaml").write_text("method: supervised\nepochs: 1\nmodel:\n  arch: mlp\n")
    save_model(run, mlp, arch="mlp", arch_kwargs={}, dataset=digits.spec, method="supervised")

    shutil.copytree(run, root / "other")
    halfway = root / "halfway"  # a supervised run that was interrupted
    shutil.copytree(run, halfway)
    (halfway / "run.json").write_text(json.dumps({"method": "supervised", "verb": "train", "status": "interrupted"}))
    (root / "mine").mkdir()  # a user's own folder
    (root / "mine" / "notes.txt").write_text("mine")
    (root / "mine" / "notes.safetensors").write_bytes(b"mine")

    syn = root / "syn"
    syn.mkdir()
    save_synthetic(syn, digits.normalize(digits.train_x[:20]), digits.train_y[:20], dataset=digits.spec, method="dc", ipc=2,
                   extra={"protocol": {"models": 1, "epochs": 1}})

    config = json.loads((run / "config.json").read_text())

    def model_folder(name, **changes):
        folder = root / name
        shutil.copytree(run, folder)
        (folder / "run.json").unlink()
        (folder / "config.json").write_text(json.dumps({**config, **changes}))

    model_folder("huge-classes", num_classes=10**12)
    model_folder("word-classes", num_classes="ten")
    model_folder("negative-shape", input_shape=[-1, 8, 8])
    model_folder("unknown-arch", architecture="nosuch")
    shutil.copytree(syn, root / "unknown-method")
    syn_config = json.loads((syn / "config.json").read_text())
    (root / "unknown-method" / "config.json").write_text(json.dumps({**syn_config, "method": "nosuch"}))
    model_folder("unknown-dataset", dataset="nosuch")
    model_folder("other-arch", architecture="convnet")
    model_folder("garbage-run-model")
    (root / "garbage-run-model" / "run.json").write_text("{")
    model_folder("outside-weights", weights="../run/model.safetensors")
    model_folder("zero-std", std=[0.0])
    model_folder("two-std", std=[1.0, 2.0])
    model_folder("no-classes")
    no_classes = json.loads((root / "no-classes" / "config.json").read_text())
    del no_classes["num_classes"]
    (root / "no-classes" / "config.json").write_text(json.dumps(no_classes))
    model_folder("truncated")
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    (root / "empty").mkdir()
    (root / "pickled").mkdir()
    (root / "pickled" / "model.pt").write_bytes(b"\x80\x04N.")
    (root / "garbage-config").mkdir()
    (root / "garbage-config" / "config.json").write_text("{not json")
    (root / "foreign-config").mkdir()
    (root / "foreign-config" / "config.json").write_text('{"model_type": "bert"}')
    (root / "garbage-run").mkdir()
    (root / "garbage-run" / "run.json").write_text("\x00\x01 not json")
    (root / "listed-run").mkdir()
    (root / "listed-run" / "run.json").write_text("[1, 2, 3]")

    _image_folders(root)
    recipes = root / "recipes"
    recipes.mkdir()
    (recipes / "dup.yaml").write_text("method: supervised\nepochs: 3\noptim:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.5\n")
    (recipes / "broken.yaml").write_text("method: supervised\nepochs: [1, 2\n")
    (recipes / "evil.yaml").write_text("method: supervised\nepochs: !!python/object/apply:os.system ['touch pwned']\n")
    (recipes / "list.yaml").write_text("- method\n- supervised\n")
    (recipes / "binary.yaml").write_bytes(b"\xff\xfe\x00method")


def _image_folders(root: Path) -> None:
    import numpy as np
    from helpers_images import encode, write_pattern_folder

    (root / "empty-photos").mkdir()
    hollow = write_pattern_folder(root / "hollow-photos", per_class=2)
    (hollow / "class9").mkdir()
    (hollow / "class9" / "notes.txt").write_text("no images")
    mixed = write_pattern_folder(root / "mixed-photos", per_class=2)
    (mixed / "class0" / "gray.png").write_bytes(encode(np.zeros((12, 12), dtype=np.uint8)))
    corrupt = write_pattern_folder(root / "corrupt-photos", per_class=2)
    victim = corrupt / "class1" / "img0002.png"
    victim.write_bytes(victim.read_bytes()[:60])


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input-fixtures")
    _build_fixtures(root)
    return root


def _snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under the roots -> a digest of its content ('dir' for folders)."""
    seen = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                seen[os.path.join(dirpath, d)] = "dir"
            for f in filenames:
                path = os.path.join(dirpath, f)
                seen[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return seen


@pytest.fixture(autouse=True)
def _fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_one_line_and_touches_nothing(row, fixtures, tmp_path, monkeypatch):
    shutil.copytree(fixtures, tmp_path, dirs_exist_ok=True)
    for name, value in row.env.items():
        monkeypatch.setenv(name, value)
    home = Path(os.environ["TOOLBOX_HOME"])
    before = _snapshot(tmp_path, home)

    result = CliRunner().invoke(cli, list(row.args))

    assert result.exit_code in (1, 2), f"exit {result.exit_code}; stdout: {result.stdout}; stderr: {result.stderr}"
    assert "Traceback" not in result.output + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not PASSED_THROUGH.search(lines[0]), lines[0]  # an internal exception's text, not a sentence of ours
    assert row.expect in lines[0]
    assert result.exit_code == row.code, lines[0]

    after = _snapshot(tmp_path, home)
    allowed = str(tmp_path / row.out) if row.out else None
    changed = sorted(p for p in set(before) | set(after)
                     if before.get(p) != after.get(p) and not (allowed and (p == allowed or p.startswith(allowed + os.sep))))
    assert not changed, f"created or changed: {changed}"
    assert not (tmp_path / "pwned").exists()


def test_the_table_covers_every_verb():
    from toolbox.cli import cli as group

    covered = {r.args[0] for r in ROWS if not r.args[0].startswith("-")}
    assert set(group.commands) <= covered, set(group.commands) - covered
    assert len(ROWS) >= 80


def test_load_plugins_naming_no_plugin_warns(monkeypatch):
    monkeypatch.setenv("TOOLBOX_LOAD_PLUGINS", "nosuch,supervised")
    result = CliRunner().invoke(cli, ["methods", "--json"])
    assert result.exit_code == 0
    assert [m["name"] for m in json.loads(result.stdout)] == ["supervised"]
    line, = result.stderr.splitlines()
    assert line.startswith("warning: TOOLBOX_LOAD_PLUGINS names 'nosuch', but no installed plugin has that name; installed: ")
    assert "supervised" in line and "zskt" in line
    monkeypatch.setenv("TOOLBOX_LOAD_PLUGINS", "supervised")
    plugins.reset()
    assert CliRunner().invoke(cli, ["methods"]).stderr == ""
