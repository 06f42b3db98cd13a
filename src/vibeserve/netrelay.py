"""An agent's only way out of its network namespace: relays to its model endpoints, and nothing else.

An agent's sandbox has no network but loopback. ``EndpointRelay`` (outside) serves a unix socket per
endpoint, bound into the sandbox; inside, ``python -P -m vibeserve.netrelay inside`` listens on loopback
and copies each connection to its socket, then runs the agent. Outside, each socket reaches one place:

- an ``http://`` endpoint: its host and port (inside, the same port on 127.0.0.1, so a loopback URL works
  unchanged; another host's URL is rewritten to 127.0.0.1);
- ``https://`` endpoints: an HTTP CONNECT proxy (inside, ``HTTPS_PROXY``) that tunnels only to the
  endpoints' hosts and ports and refuses any other with 403.

So the agent reaches its model API, TLS intact, and no other service, local or remote.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

MODULE = "vibeserve.netrelay"
PROXY_PORT = 3128  # inside the agent's own network namespace every port is free
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
CHUNK = 65536


def _splice(src: socket.socket, dst: socket.socket) -> None:
    """Copy bytes from ``src`` to ``dst`` until ``src`` ends, then end ``dst``'s writing side."""
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def pipe_both(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until both directions end; close both."""
    other = threading.Thread(target=_splice, args=(b, a), daemon=True)
    other.start()
    _splice(a, b)
    other.join()
    a.close()
    b.close()


@dataclass
class Route:
    inside_port: int
    sock: Path
    target: tuple[str, int] | None  # None: the CONNECT proxy


@dataclass
class EndpointRelay:
    """``with EndpointRelay(urls) as r``: wrap the agent with ``r.prefix``, bind ``r.binds``, add ``r.env``,
    and give it ``r.url(u)`` for each endpoint URL."""

    urls: list[str]
    routes: list[Route] = field(default_factory=list)
    allowed: set[tuple[str, int]] = field(default_factory=set)
    rewrites: dict[str, str] = field(default_factory=dict)
    _dir: Path | None = None
    _listeners: list[socket.socket] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> EndpointRelay:
        self._dir = Path(tempfile.mkdtemp(prefix="vibeserve-net-"))
        try:
            for url in dict.fromkeys(self.urls):
                self._plan(url)
            for route in self.routes:
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(str(route.sock))
                listener.listen(16)
                listener.settimeout(0.2)
                self._listeners.append(listener)
                threading.Thread(target=self._accept, args=(listener, route), daemon=True).start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _plan(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"model endpoint {url!r} is not an http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        assert self._dir is not None
        if parts.scheme == "https":
            self.allowed.add((parts.hostname, port))
            if not any(r.target is None for r in self.routes):
                self.routes.append(Route(PROXY_PORT, self._dir / "proxy.sock", None))
            return
        if not any(r.inside_port == port for r in self.routes):
            self.routes.append(Route(port, self._dir / f"{len(self.routes)}.sock", (parts.hostname, port)))
        if parts.hostname not in LOOPBACK:
            netloc = f"127.0.0.1:{port}"
            self.rewrites[url] = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    # -- what the agent's command gets -------------------------------------------------------------------
    def url(self, url: str) -> str:
        return self.rewrites.get(url, url)

    @property
    def binds(self) -> list[Path]:
        return [self._dir] if self._dir is not None else []

    @property
    def prefix(self) -> list[str]:
        if not self.routes:
            return []
        forwards = [a for r in self.routes for a in ("--forward", f"{r.inside_port}={r.sock}")]
        return [sys.executable, "-P", "-m", MODULE, "inside", *forwards, "--"]

    @property
    def env(self) -> dict[str, str]:
        if not self.allowed:
            return {}
        proxy = f"http://127.0.0.1:{PROXY_PORT}"
        return {"HTTPS_PROXY": proxy, "https_proxy": proxy}

    # -- outside: each connection to its one destination -----------------------------------------------------
    def _accept(self, listener: socket.socket, route: Route) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=self._serve, args=(conn, route), daemon=True).start()

    def _serve(self, conn: socket.socket, route: Route) -> None:
        try:
            if route.target is not None:
                pipe_both(conn, socket.create_connection(route.target, timeout=30))
                return
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 16384:
                data = conn.recv(4096)
                if not data:
                    break
                head += data
            line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            host, _, port = (line[1] if len(line) == 3 and line[0] == "CONNECT" else "").rpartition(":")
            if not port.isdigit() or (host.strip("[]"), int(port)) not in self.allowed:
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                conn.close()
                return
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
            upstream.settimeout(None)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            rest = head.split(b"\r\n\r\n", 1)[1]
            if rest:
                upstream.sendall(rest)
            pipe_both(conn, upstream)
        except OSError:
            with contextlib.suppress(OSError):
                conn.close()


# -- inside the sandbox ------------------------------------------------------------------------------------
def _inside_accept(listener: socket.socket, sock: str) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        out = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            out.connect(sock)
        except OSError:
            conn.close()
            continue
        threading.Thread(target=pipe_both, args=(conn, out), daemon=True).start()


def inside(argv: list[str]) -> int:
    """``inside --forward PORT=SOCKET ... -- COMMAND...``: listen, run the command, exit with its code."""
    split = argv.index("--") if "--" in argv else len(argv)
    opts, command = argv[:split], argv[split + 1:]
    if not command:
        print(f"usage: python -P -m {MODULE} inside [--forward PORT=SOCKET]... -- COMMAND...", file=sys.stderr)
        return 2
    for spec in (opts[i + 1] for i, a in enumerate(opts) if a == "--forward"):
        port, _, sock = spec.partition("=")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(port)))
        listener.listen(64)
        threading.Thread(target=_inside_accept, args=(listener, sock), daemon=True).start()
    try:
        return subprocess.run(command, stdin=subprocess.DEVNULL).returncode
    except OSError as e:
        print(f"{MODULE}: cannot run {command[0]!r}: {e.strerror}", file=sys.stderr)
        return 127


def main(argv: list[str]) -> int:
    if argv[:1] == ["inside"]:
        return inside(argv[1:])
    print(f"usage: python -P -m {MODULE} inside [--forward PORT=SOCKET]... -- COMMAND...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
