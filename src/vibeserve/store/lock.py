"""One owner per run: the process that runs or resumes it holds an OS lock on ``runs/<id>/owner.lock``.

The lock (``flock``) lives as long as the owning process, and the kernel drops it when that process ends,
however it ends, so a crashed run never stays locked. The file also says who holds it, for the message a
second process gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

from vibeserve.errors import VibeserveError

FILE = "owner.lock"


class RunBusy(VibeserveError):
    """Another live process owns the run."""


def owner(run_dir: Path) -> dict | None:
    """Who holds the run's lock now (pid, command, since), or None when nobody does."""
    path = run_dir / FILE
    if not path.exists():
        return None
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                return json.loads(f.read() or "{}")
            except json.JSONDecodeError:
                return {}
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def describe(info: dict, run_id: str) -> str:
    since = time.strftime("%H:%M:%S", time.localtime(info["since"])) if info.get("since") else "?"
    return (f"run {run_id} is in use by process {info.get('pid', '?')} (`{info.get('command', 'vibeserve')}`, since "
            f"{since}); wait for it to end, or stop it (`kill {info.get('pid', 'PID')}`: it marks the run "
            f"interrupted) and then `vibeserve resume {run_id}`")


class RunLock:
    """Held for the life of the process that owns a run; ``release()`` (or the process's end) frees it."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / FILE
        self._file = None

    def acquire(self) -> RunLock:
        f = open(self.path, "a+")  # noqa: SIM115 - kept open while the lock is held
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                info = json.loads(f.read() or "{}")
            except json.JSONDecodeError:
                info = {}
            f.close()
            raise RunBusy(describe(info, self.path.parent.name)) from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "command": " ".join(["vibeserve", *sys.argv[1:3]]),
                            "since": time.time()}))
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
