"""Start a candidate deliverable, wait until it is ready, and stop its whole process group."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from vibeserve.process import Spawned, clean_env, spawn
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
    """The deliverable did not answer its ready URL in time, or exited first."""


class CandidateServer:
    """A running deliverable. Use as a context manager so the group is always stopped."""

    def __init__(
        self,
        target: Target,
        workdir: Path,
        log_dir: Path,
        name: str,
        on_start: Callable[[int], None] | None = None,
        on_stop: Callable[[int], None] | None = None,
    ):
        self.target, self.workdir, self.log_dir, self.name = target, workdir, log_dir, name
        self.on_start, self.on_stop = on_start, on_stop
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
        self.proc = spawn(self.argv, self.workdir, self.log_dir, self.name, env=clean_env())
        if self.on_start:
            self.on_start(self.proc.pgid)
        ready = self.target.render([spec.ready_url], port=self.port)[0]
        deadline = t0 + spec.ready_timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise ServerNotReady(
                    f"the deliverable exited with code {code} before it was ready:\n{self._tail()}"
                )
            try:
                with urllib.request.urlopen(ready, timeout=2) as r:
                    if r.status == 200:
                        self.startup_s = time.monotonic() - t0
                        return
            except (urllib.error.URLError, OSError, TimeoutError):
                pass
            time.sleep(0.1)
        raise ServerNotReady(
            f"the deliverable did not answer 200 at {ready} within {spec.ready_timeout_s:.0f} s:\n{self._tail()}"
        )

    def _tail(self) -> str:
        parts = []
        for p in (self.proc.stderr_path, self.proc.stdout_path) if self.proc else ():
            with contextlib.suppress(OSError):
                parts.append(p.read_text(errors="replace")[-1500:])
        return "\n".join(x for x in parts if x.strip())

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
