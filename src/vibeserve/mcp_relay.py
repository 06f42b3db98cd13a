"""A byte relay that lets a sandboxed agent use MCP servers that run outside its sandbox.

The issue tracker's MCP server writes the run store, which an agent's sandbox must not write. So the
framework serves each of a call's MCP servers on a unix socket (``McpRelay``) and the agent CLI starts
``python -m vibeserve.mcp_relay connect SOCKET`` in its place, which copies its stdin and stdout to the
socket. For each connection the relay starts the real server command, outside the sandbox, and copies
bytes both ways. Only bytes pass: the MCP SDK at both ends talks to itself unchanged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vibeserve.types import McpServerSpec

MODULE = "vibeserve.mcp_relay"
CHUNK = 65536


class McpRelay:
    """``with McpRelay(servers, cwd, log_dir) as r``: give the agent ``r.servers`` and bind ``r.binds``.

    With ``enabled=False`` the servers pass through unchanged and nothing is started.
    """

    def __init__(self, servers: list[McpServerSpec], cwd: Path, log_dir: Path, enabled: bool = True):
        self.specs, self.cwd, self.log_dir, self.enabled = list(servers), cwd, log_dir, enabled
        self.servers: list[McpServerSpec] = list(servers)
        self.binds: list[Path] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._live: list[tuple[socket.socket, subprocess.Popen]] = []
        self._lock = threading.Lock()
        self._dir: Path | None = None

    def __enter__(self) -> McpRelay:
        if not self.enabled or not self.specs:
            return self
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # A short path: a unix socket's path must fit in 108 bytes, and a run directory's may not.
        self._dir = Path(tempfile.mkdtemp(prefix="vibeserve-mcp-"))
        self.binds = [self._dir]
        src = str(Path(__file__).resolve().parents[1])
        self.servers = []
        try:
            for i, spec in enumerate(self.specs):
                path = self._dir / f"{i}.sock"
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(str(path))
                listener.listen(8)
                listener.settimeout(0.2)  # the accept loop looks at the stop flag this often
                self._start(self._accept, listener, spec)
                # PYTHONPATH: an agent CLI hands its MCP servers a bare environment.
                self.servers.append(spec.model_copy(update={
                    "command": [sys.executable, "-P", "-m", MODULE, "connect", str(path)],
                    "env": {"PYTHONPATH": src},
                }))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        from vibeserve.process import kill_group

        self._stop.set()
        with self._lock:
            live = list(self._live)
        for conn, proc in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            kill_group(proc.pid, grace_s=2.0, reap=proc.poll)
        for thread in self._threads:
            thread.join(timeout=5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _start(self, target, *args: object) -> None:  # noqa: ANN001
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket, spec: McpServerSpec) -> None:
        with listener:
            while not self._stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.settimeout(None)
                self._start(self._serve, conn, spec)

    def _serve(self, conn: socket.socket, spec: McpServerSpec) -> None:
        """Start the real server for one connection and copy bytes both ways until either side ends."""
        from vibeserve.process import clean_env, kill_group

        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.name)
        with conn, open(self.log_dir / f"mcp-{name}.stderr", "ab") as errlog:
            try:
                proc = subprocess.Popen(spec.command, cwd=self.cwd, env=clean_env(spec.env), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=errlog, start_new_session=True)
            except OSError as e:
                errlog.write(f"cannot start MCP server {spec.command}: {e}\n".encode())
                return
            with self._lock:
                self._live.append((conn, proc))
            down = threading.Thread(target=_socket_to_pipe, args=(conn, proc.stdin), daemon=True)
            down.start()
            _pipe_to_socket(proc.stdout, conn)
            down.join(timeout=5)
            kill_group(proc.pid, grace_s=2.0, reap=proc.poll)
            proc.wait()
            with self._lock:  # reaped: its pid may be reused, so it must not be killed again
                self._live.remove((conn, proc))


def _socket_to_pipe(conn: socket.socket, pipe) -> None:  # noqa: ANN001
    try:
        while data := conn.recv(CHUNK):
            pipe.write(data)
            pipe.flush()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            pipe.close()  # the server reads EOF and ends, as when its client closes stdin


def _pipe_to_socket(pipe, conn: socket.socket) -> None:  # noqa: ANN001
    try:
        while data := os.read(pipe.fileno(), CHUNK):
            conn.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def connect(path: str) -> int:
    """The agent's side: stdin to the socket, the socket to stdout, until the socket closes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        print(f"{MODULE}: cannot reach the MCP relay at {path}: {e}", file=sys.stderr)
        return 1

    def up() -> None:
        try:
            while data := os.read(0, CHUNK):
                sock.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=up, daemon=True).start()
    try:
        while data := sock.recv(CHUNK):
            _write_all(1, data)
    except OSError:
        pass
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "connect":
        print(f"usage: python -m {MODULE} connect SOCKET", file=sys.stderr)
        return 2
    return connect(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
