"""``--nproc N``: the same command again as N ranks on this machine, through torch's elastic launcher
(what ``torchrun --standalone`` runs), and one line when a rank fails.

The ranks inherit the terminal: rank 0 shows the progress bar and the summary, the others print
nothing. A rank that stops writes its one-line error to a folder this process gave it (the
``ERRORS`` environment variable) instead of the terminal; when the job ends badly this process prints
the one line that explains it: a rank's own error (bad input, a NaN loss) if one gave one, else which
rank died and how, with the command that continues the run from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path

ERRORS = "TOOLBOX_RANK_ERRORS"
RUN_DIR = "run_dir"


def relaunch(nproc: int) -> None:
    """Run this process's command line as ``nproc`` ranks and exit with the job's status."""
    from .errors import RunError, UsageError

    args = _without_nproc(sys.argv[1:])
    if args is None:
        raise UsageError("--nproc starts the command again as several processes and needs the real command line; "
                         "run it from a shell (or start the ranks yourself with torchrun -m toolbox ...)")
    import logging

    import torch.distributed.launcher.api as launcher
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # its warnings are about its own mechanics
    config = launcher.LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                                   rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                                   monitor_interval=0.1, start_method="spawn")
    with tempfile.TemporaryDirectory(prefix="toolbox-ranks-") as errors:
        os.environ[ERRORS] = errors
        try:
            launcher.elastic_launch(config, sys.executable)("-m", "toolbox", *args)
        except ChildFailedError as e:
            line, code = explain(Path(errors), e.failures, nproc)
            raise (UsageError if code == 2 else RunError)(line) from None
        finally:
            os.environ.pop(ERRORS, None)


def _without_nproc(argv: list[str]) -> list[str] | None:
    for i, a in enumerate(argv):
        if a == "--nproc" and i + 1 < len(argv):
            return argv[:i] + argv[i + 2:]
        if a.startswith("--nproc="):
            return argv[:i] + argv[i + 1:]
    return None


def explain(errors: Path, failures: dict, nproc: int) -> tuple[str, int]:
    """The one line (and exit code) for a job whose ranks ``failures`` (local rank -> ProcessFailure) failed."""
    said = {}
    for f in errors.glob("rank-*.json"):
        try:
            said[int(f.stem.split("-")[1])] = json.loads(f.read_text())
        except (ValueError, OSError):
            continue
    own = [said[r] for r in sorted(said) if said[r].get("kind") == "toolbox"]
    if own:  # a rank said what went wrong in words (bad input, NaN loss, a corrupt checkpoint)
        return own[0]["line"].removeprefix("error: "), int(own[0].get("code", 1))
    # the launcher stops the surviving ranks with SIGTERM once one failed, and a survivor may first
    # fail at a collective with its peer gone: the cause is a rank that died otherwise, if one did
    first = min(failures.values(), key=lambda f: (f.exitcode == -signal.SIGTERM, f.exitcode > 0, f.timestamp,
                                                  f.local_rank)) if failures else None
    if first is not None and first.exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-first.exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-first.exitcode}"
    elif first is not None:
        how = f"exited with status {first.exitcode}"
    else:
        how = "failed"
    rank = first.local_rank if first is not None else "?"
    lines = [s["line"] for s in said.values() if s.get("kind") == "unexpected"]
    why = f" ({lines[0]})" if lines and first is not None and first.exitcode > 0 else ""
    return f"rank {rank} {how}{why.replace('(error: ', '(')}; {_continue_hint(errors, nproc)}", 1


def _continue_hint(errors: Path, nproc: int) -> str:
    try:
        run_dir = Path((errors / RUN_DIR).read_text())
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return "no run directory was written yet: start it again"
    from .runs import CHECKPOINT

    verb = info.get("verb", "train")
    if not (run_dir / CHECKPOINT).exists():
        return f"no checkpoint was written yet: start again, or continue with toolbox {verb} --resume {run_dir} --nproc {nproc}"
    return f"the last checkpoint is kept: continue with toolbox {verb} --resume {run_dir} --nproc {nproc}"


def report(line: str, kind: str, code: int) -> bool:
    """Record a rank's error line for the launcher (True), or say whether this process prints it itself
    (False: not a rank of ours). ``kind``: toolbox (the user's words), rank (another rank stopped first),
    unexpected (a crash, e.g. a peer's socket closing)."""
    folder = os.environ.get(ERRORS)
    if not folder or not os.environ.get("RANK"):
        return False
    rank = os.environ["RANK"]
    try:
        Path(folder, f"rank-{rank}.json").write_text(json.dumps({"line": line, "kind": kind, "code": code}))
    except OSError:
        return False
    return True


def note_run_dir(run_dir) -> None:
    """Rank 0 tells the launcher where the run is written (for the continue hint)."""
    folder = os.environ.get(ERRORS)
    if folder and os.environ.get("RANK", "0") == "0":
        try:
            Path(folder, RUN_DIR).write_text(str(Path(run_dir).resolve()))
        except OSError:
            pass
