"""One writer per run directory: an exclusive ``flock`` on ``<run>/.lock`` while a process writes it.

The kernel drops a flock when its process ends, however it ends (crash, kill -9), so a lock file
left behind by a dead process is stale by construction: the next process simply takes it over.
Forked children (DataLoader workers) close their copies of the lock at once, or the lock would live
on in them after their parent was killed.
The file records the holder's pid and host, for the message that another process shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from .errors import UsageError

LOCK_NAME = ".lock"

# locks this process holds: resolved run dir -> [fd, depth]. A flock belongs to one open file, so a
# second flock from the same process would wait for itself; nested holds (cached_run -> execute)
# share the first one instead.
_held: dict[str, list] = {}


def describe(holder: dict | None) -> str:
    if not holder or not holder.get("pid"):
        return "another process"
    where = f" on {holder['host']}" if holder.get("host") and holder["host"] != socket.gethostname() else ""
    since = f" since {holder['since']}" if holder.get("since") else ""
    return f"process {holder['pid']}{where}{since}"


def holder(run_dir: Path) -> dict | None:
    """Who holds (or last held) the lock of ``run_dir``, as recorded in its lock file; None if unknown."""
    path = Path(run_dir) / LOCK_NAME
    for _ in range(5):  # the holder writes its details just after taking the lock
        try:
            text = path.read_text()
        except OSError:
            return None
        if text.strip():
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                pass
        time.sleep(0.05)
    return None


def _lock_file(path: Path, wait: bool) -> int | None:
    """An fd holding an exclusive flock on the file now at ``path``; None if busy and not ``wait``."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # the previous holder unlinks the file as it releases: then we locked a file nobody else
        # sees, and must lock the one at the path now
        try:
            now = os.stat(path)
            mine = os.fstat(fd)
            if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def hold(run_dir: Path, on_wait: Callable[[dict | None], None] | None = None):
    """Hold ``run_dir``'s lock for the block (the folder must exist).

    If another live process holds it: raise a one-line UsageError naming that process, or, when
    ``on_wait`` is given, call it with the holder's details and wait until the lock is free.
    """
    key = str(Path(run_dir).resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            if key in _held:  # else a forked child, which forgot the lock (_forget_in_child)
                _held[key][1] -= 1
        return
    path = Path(run_dir) / LOCK_NAME
    fd = _lock_file(path, wait=False)
    if fd is None:
        who = holder(run_dir)
        if on_wait is None:
            raise UsageError(f"{run_dir} is being written by {describe(who)}; wait for it to end, or stop it "
                             f"(kill {who['pid'] if who and who.get('pid') else '<pid>'}) and continue with --resume")
        on_wait(who)
        fd = _lock_file(path, wait=True)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv,
                             "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode())
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        if _held.pop(key, None) is not None:  # else a forked child: the file and the lock are its parent's
            # unlink while still holding, so a waiter that wakes on this file retries on a fresh one
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)


def _forget_in_child() -> None:
    """A flock lasts until the last fd of its open file closes, and a forked child inherits those fds:
    closing the child's copies (never LOCK_UN, which would unlock the parent too) lets the lock end
    with its holder, even while that holder's DataLoader workers are still shutting down."""
    for fd, _ in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


if hasattr(os, "register_at_fork"):  # POSIX, where flock exists
    os.register_at_fork(after_in_child=_forget_in_child)

