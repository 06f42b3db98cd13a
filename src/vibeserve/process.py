"""Subprocesses in their own process group, with a timeout, logs to files, and a kill that takes the group."""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vibeserve.errors import VibeserveError

# Variables that carry credentials; candidate servers and gates never see them.
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL", "AUTH")


def clean_env(extra: dict[str, str] | None = None, keep_secrets: bool = False) -> dict[str, str]:
    """The environment for a child: ours minus credentials, with this interpreter's bin first on PATH.

    Putting ``dirname(sys.executable)`` first makes a target's ``python`` mean the interpreter vibeserve
    runs in, so a virtual environment works without being activated.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if keep_secrets or not any(m in k.upper() for m in SECRET_MARKERS)
    }
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pgid: int, seconds: float, reap: Callable[[], object] | None) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if reap:
            reap()
        if not group_alive(pgid):
            return True
        time.sleep(0.02)
    return False


def kill_group(pgid: int, grace_s: float = 3.0, reap: Callable[[], object] | None = None) -> None:
    """SIGTERM the group, wait up to ``grace_s``, then SIGKILL whatever is left.

    ``reap`` (our child's ``poll``) is called while waiting: a dead leader stays a zombie, and so a live
    group member, until its parent reaps it.
    """
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pgid, wait_s, reap):
            return


class CommandNotRunnable(VibeserveError):
    """The program of a command does not exist or is not executable."""


@dataclass
class Completed:
    argv: list[str]
    returncode: int | None  # None when it was killed at the timeout
    timed_out: bool
    wall_s: float
    stdout_path: Path
    stderr_path: Path

    def tail(self, n: int = 2000) -> str:
        """The last ``n`` characters of stderr, then stdout: what a user needs to see of a failure."""
        parts = [t for p in (self.stderr_path, self.stdout_path) if (t := read_tail(p, n)).strip()]
        return "\n".join(parts)[-n:]


def last_line(text: str) -> str:
    """The last non-empty line of a log tail: usually the error itself."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def read_tail(path: Path, n: int = 2000) -> str:
    """The last ``n`` characters of a file, read from its end (a log may be gigabytes); '' if unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4 * n))
            return f.read().decode(errors="replace")[-n:]
    except OSError:
        return ""


@dataclass(frozen=True)
class GroupRecorder:
    """Who hears of the process groups started in a context: ``on_start(pgid, what)`` once a group exists,
    ``on_stop(pgid)`` once it is gone. A run records them, so that after a kill -9 of the run the groups
    it left behind (an agent CLI, a shell command of an agent) are found and stopped by ``resume``."""

    on_start: Callable[[int, str], None]
    on_stop: Callable[[int], None]
    what: str


_recorder: contextvars.ContextVar[GroupRecorder | None] = contextvars.ContextVar("group_recorder", default=None)


@contextlib.contextmanager
def recording(recorder: GroupRecorder):
    """Every group ``spawn`` starts in this context (this thread, and tasks and threads started with a copy
    of its context, as ``asyncio`` and ``asyncio.to_thread`` do) is reported to ``recorder``."""
    token = _recorder.set(recorder)
    try:
        yield
    finally:
        _recorder.reset(token)


class Spawned:
    """A started process group; ``stop()`` ends the whole group."""

    def __init__(self, popen: subprocess.Popen, argv: list[str], stdout_path: Path, stderr_path: Path,
                 recorder: GroupRecorder | None = None):
        self.popen, self.argv = popen, argv
        self.stdout_path, self.stderr_path = stdout_path, stderr_path
        self.pgid = popen.pid  # start_new_session=True makes the child its group's leader
        self.started = time.monotonic()
        self.recorder = recorder
        if recorder is not None:
            recorder.on_start(self.pgid, f"{recorder.what}: {Path(argv[0]).name}")

    def _gone(self) -> None:
        if self.recorder is not None:
            self.recorder.on_stop(self.pgid)
            self.recorder = None

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout_s: float) -> Completed:
        timed_out = False
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        except BaseException:  # an interrupt: nothing this started may outlive it
            kill_group(self.pgid, reap=self.popen.poll)
            self._gone()
            raise
        # The leader may be gone while children it forked linger; the group goes either way.
        kill_group(self.pgid, reap=self.popen.poll)
        self.popen.wait()
        self._gone()
        return Completed(
            self.argv,
            None if timed_out else self.popen.returncode,
            timed_out,
            time.monotonic() - self.started,
            self.stdout_path,
            self.stderr_path,
        )

    def stop(self) -> None:
        kill_group(self.pgid, reap=self.popen.poll)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        self._gone()


def spawn(
    argv: list[str],
    cwd: Path,
    log_dir: Path,
    name: str,
    env: dict[str, str] | None = None,
    stdin_path: Path | None = None,
    preexec: Callable[[], None] | None = None,
) -> Spawned:
    """Start ``argv`` in a new session (its own process group), stdout/stderr to ``log_dir/name.*``.

    ``preexec`` runs in the child before it executes ``argv`` (limits, a control group)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out, err = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env if env is not None else clean_env(),
                stdin=stdin,
                stdout=fo,
                stderr=fe,
                start_new_session=True,
                preexec_fn=preexec,
            )
        except OSError as e:
            raise CommandNotRunnable(f"cannot run {argv[0]!r} (from {' '.join(argv)}): {e.strerror}") from e
        finally:
            if stdin_path:
                stdin.close()
    return Spawned(popen, argv, out, err, _recorder.get())


def run(
    argv: list[str],
    cwd: Path,
    log_dir: Path,
    name: str,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> Completed:
    """Run to completion or timeout; the whole process group is gone when this returns."""
    return spawn(argv, cwd, log_dir, name, env).wait(timeout_s)


def stop_children() -> None:
    """Stop every process group this process started (each child leads its own session): what rounds in
    flight on other threads were running when the run was interrupted."""
    for children in Path("/proc/self/task").glob("*/children"):
        try:
            pids = [int(p) for p in children.read_text().split()]
        except OSError:
            continue
        for pid in pids:
            try:
                if os.getpgid(pid) == pid:
                    kill_group(pid, grace_s=1.0)
            except ProcessLookupError:
                continue
