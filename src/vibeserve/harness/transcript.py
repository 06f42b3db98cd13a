"""The normalized JSONL transcript every harness writes, and the environment a CLI agent gets.

Events share one shape whatever the harness: ``{"t": unix time, "type": ..., ...}`` with types
``start``, ``message`` (text), ``tool_call`` (name, arguments), ``tool_result`` (name, output, is_error),
``usage`` (tokens), ``reply`` (the structured reply), ``error`` and ``end`` (exit_reason, wall_s).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from vibeserve.errors import HarnessError
from vibeserve.types import AgentCall, AgentResult, ExitReason

PASS_THROUGH = ("PATH", "LANG", "LC_ALL", "TZ", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "SSL_CERT_FILE")


class Transcript:
    """Appends events to the call's transcript file as they happen (flushed, so a kill loses nothing)."""

    def __init__(self, call: AgentCall, harness: str):
        call.transcript_path.parent.mkdir(parents=True, exist_ok=True)
        self.fh: IO[str] = open(call.transcript_path, "a")  # noqa: SIM115 - closed in close()
        self.event("start", harness=harness, key=call.key, role=str(call.role), model=call.model,
                   prompt=call.prompt, workdir=str(call.workdir))

    def event(self, type_: str, **data: Any) -> None:
        self.fh.write(json.dumps({"t": time.time(), "type": type_, **data}, default=str) + "\n")
        self.fh.flush()

    def finish(self, reason: ExitReason, reply: dict[str, Any] | None = None, error: str = "",
               **result: Any) -> AgentResult:
        """Log the reply (if any) and the end of the call, and return the call's ``AgentResult``."""
        if reply is not None:
            self.event("reply", reply=reply)
        self.event("end", exit_reason=str(reason), wall_s=result.get("wall_s"), error=error)
        return AgentResult(reply=reply, exit_reason=reason, error=error, **result)

    def close(self) -> None:
        self.fh.close()

    def __enter__(self) -> Transcript:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def agent_env(provider_vars: tuple[str, ...], extra: dict[str, str]) -> dict[str, str]:
    """A CLI agent's environment: the basics, its own provider's variables, nothing else of ours.

    Loopback never goes through a proxy: both CLIs apply proxy variables to 127.0.0.1 otherwise.
    """
    env = {k: os.environ[k] for k in (*PASS_THROUGH, *provider_vars) if k in os.environ}
    no_proxy = [p for p in os.environ.get("NO_PROXY", "").split(",") if p]
    env["NO_PROXY"] = env["no_proxy"] = ",".join(dict.fromkeys([*no_proxy, "127.0.0.1", "localhost"]))
    env.update(extra)
    return env


def check_endpoint(harness: str, url: str, timeout_s: float = 5.0) -> None:
    """Raise ``HarnessError`` naming ``url`` unless something accepts a connection there (before round 0)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HarnessError(f"the {harness} harness's base_url {url!r} is not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise HarnessError(f"the {harness} harness's model endpoint {url} cannot be reached ({why}); start the "
                           "server or fix --harness-option base_url before the run spends time on round 0") from None


def find_binary(name: str, explicit: str | None, package: str) -> str:
    """The CLI's path: the given one, then PATH, then the project's own npm prefix (``.cache/npm``)."""
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            raise HarnessError(f"{name}: {explicit} is not an executable file")
        return explicit
    found = shutil.which(name)
    if found:
        return found
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        local = root / ".cache" / "npm" / "node_modules" / ".bin" / name
        if local.is_file():
            return str(local)
    raise HarnessError(
        f"the {name} CLI is not installed: run `npm install --prefix .cache/npm {package}` "
        f"(or `bash scripts/setup.sh --agents`), or pass its path with --harness-option binary=PATH"
    )
