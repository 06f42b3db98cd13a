"""A kit's deliverable started as the framework starts it, for the kits' end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(tree: Path, model: Path, env: dict[str, str], ready_timeout_s: float = 300,
            started: list[subprocess.Popen] | None = None, clean_exit: bool = False) -> Iterator[str]:
    """Start a deliverable as the framework does, wait for /health, stop it with SIGTERM at the end.

    ``started``, if given, receives the server's process; with ``clean_exit`` the server must also stop on
    SIGTERM within 15 s with status 0, leaving no process of its group, as the target contract asks."""
    port = free_port()
    log_path = tree / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "server", "--port", str(port), "--model", str(model)],
                                cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if started is not None:
            started.append(proc)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                assert proc.poll() is None, f"server exited with {proc.returncode}:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"server not ready within {ready_timeout_s:.0f} s"
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                time.sleep(0.2)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                code = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if clean_exit:
                    raise AssertionError("server ignored SIGTERM") from None
            else:
                if clean_exit:
                    assert code == 0, f"server exited with {code} on SIGTERM"
                    try:  # nothing of its process group is left
                        os.killpg(proc.pid, 0)
                    except ProcessLookupError:
                        pass
                    else:
                        raise AssertionError("processes of the server's group outlived it")
