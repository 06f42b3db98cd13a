"""Start a candidate deliverable, wait until it is ready, and stop its whole process group."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from vibeserve.jail import CandidateJail
from vibeserve.process import Spawned, clean_env, last_line, read_tail, spawn
from vibeserve.sandbox import SandboxMode
from vibeserve.target.spec import Target


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class ServerNotReady(Exception):
    """The deliverable did not answer its ready URL in time, or exited first; ``detail``: its log tails."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.detail = detail


class CandidateServer:
    """A running deliverable, confined by ``jail``. Use as a context manager so the group is always stopped."""

    def __init__(
        self,
        target: Target,
        workdir: Path,
        log_dir: Path,
        name: str,
        on_start: Callable[[int], None] | None = None,
        on_stop: Callable[[int], None] | None = None,
        jail: CandidateJail | None = None,
    ):
        self.target, self.workdir, self.log_dir, self.name = target, workdir, log_dir, name
        self.on_start, self.on_stop = on_start, on_stop
        self.jail = jail or CandidateJail(mode=SandboxMode.NONE)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Spawned | None = None
        self.startup_s = 0.0

    @property
    def argv(self) -> list[str]:
        return self.target.render(self.target.spec.deliverable.start, port=self.port)

    def start(self) -> None:
        spec = self.target.spec.deliverable
        t0 = time.monotonic()
        self.proc = spawn(self.jail.argv(self.argv, self.workdir), self.workdir, self.log_dir, self.name,
                          env=clean_env(), preexec=self.jail.limits.apply)
        if self.on_start:
            self.on_start(self.proc.pgid)
        ready = self.target.render([spec.ready_url], port=self.port)[0]
        deadline = t0 + spec.ready_timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                said = last_line(read_tail(self.proc.stderr_path)) or last_line(read_tail(self.proc.stdout_path))
                raise ServerNotReady(f"the deliverable exited with code {code} before it was ready{self.limit_hit()}"
                                     f"{': ' + said if said else ''}", self.tail())
            try:
                with urllib.request.urlopen(ready, timeout=2) as r:
                    if r.status == 200:
                        self.startup_s = time.monotonic() - t0
                        return
            except (urllib.error.URLError, OSError, TimeoutError):
                pass
            time.sleep(0.1)
        raise ServerNotReady(f"the deliverable did not answer 200 at {ready} within {spec.ready_timeout_s:.0f} s",
                             self.tail())

    def tail(self, n: int = 1500) -> str:
        """The end of the deliverable's stderr and stdout, read from the end of its logs."""
        if self.proc is None:
            return ""
        parts = [f"[{p.name}]\n{t}" for p in (self.proc.stderr_path, self.proc.stdout_path)
                 if (t := read_tail(p, n)).strip()]
        return "\n".join(parts)

    @property
    def exited(self) -> int | None:
        """The deliverable's exit code once it has exited, else None."""
        return None if self.proc is None else self.proc.poll()

    def exited_within(self, seconds: float) -> int | None:
        """The exit code if the deliverable has exited or does within ``seconds`` (a server that just died
        may take a moment to be reaped through its sandbox), else None."""
        deadline = time.monotonic() + seconds
        while (code := self.exited) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return code

    def limit_hit(self) -> str:
        """'': (it ran into no limit), else '; <which [limits] key it passed>' for a failed verdict."""
        if self.proc is None:
            return ""
        files = [self.proc.stderr_path, self.proc.stdout_path]
        said = self.jail.limits.which_passed(self.proc.poll(), read_tail(self.proc.stderr_path, 4000), files)
        return f"; {said}" if said else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            if self.on_stop:
                self.on_stop(self.proc.pgid)
            self.proc = None

    def __enter__(self) -> CandidateServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
