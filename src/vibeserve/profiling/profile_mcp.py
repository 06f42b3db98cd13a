"""The ``profile`` MCP server (stdio) the framework gives the evaluator and the implementer.

Run as ``python -m vibeserve.profiling.profile_mcp --context FILE``, where FILE is the ``ProfileContext`` the
round wrote for one agent call: which tree to start, how the run confines candidates, where the profiles
go. Each call of ``profile`` starts the candidate as a gate would, drives it with the target's benchmark
load for a bounded time under py-spy (and Nsight Systems on a CUDA target), and answers with a short
summary; the full profile stays in
``logs/rNNN/aA/profiles/<role>-<n>/``.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, ConfigDict

from vibeserve.jail import CandidateJail
from vibeserve.profiling.runner import ProfileFailed, profile_candidate
from vibeserve.profiling.session import ProfileJob
from vibeserve.sandbox import Sandbox, SandboxMode
from vibeserve.types import McpServerSpec

SERVER_NAME = "profiler"
MODULE = "vibeserve.profiling.profile_mcp"
TOOLS = ("profile",)
MIN_SECONDS = 3.0
# What an agent CLI should allow one call: the lock wait, the candidate's start and the load, with room.
TOOL_TIMEOUT_S = 900.0


class ProfileContext(BaseModel):
    """What the ``profile`` tool of one agent call profiles, and how; written by the round."""

    model_config = ConfigDict(extra="forbid")

    role: str
    target_root: Path
    workdir: Path  # the round's worktree: what the candidate is started from, as it is when profiled
    profiles_dir: Path  # logs/rNNN/aA/profiles
    bench_lock: Path
    jail: CandidateJail = CandidateJail(mode=SandboxMode.NONE)
    sandbox: SandboxMode = SandboxMode.NONE
    run_dir: Path | None = None
    bwrap: str = "bwrap"
    readable: list[Path] = []  # what every sandbox reads: the target and its artifacts
    default_seconds: float = 15.0
    max_seconds: float = 60.0
    lock_wait_s: float = 600.0

    def sandbox_of(self) -> Sandbox | None:
        if self.sandbox is SandboxMode.NONE:
            return None
        return Sandbox(self.sandbox, self.run_dir, readable=self.readable, binary=self.bwrap)

    def next_dir(self) -> Path:
        """A fresh folder for the next profile of this role: ``<role>-1``, ``<role>-2``, ..."""
        self.profiles_dir.mkdir(parents=True, exist_ok=True)
        n = 1
        while (self.profiles_dir / f"{self.role}-{n}").exists():
            n += 1
        out = self.profiles_dir / f"{self.role}-{n}"
        out.mkdir()
        return out


def build_server(ctx: ProfileContext) -> MCPServer[Any]:
    """An MCP server whose one tool profiles the candidate of ``ctx``."""
    server: MCPServer[Any] = MCPServer(
        SERVER_NAME,
        instructions=("Profiles of the candidate under the target's own benchmark load: where its time goes "
                      "(model forward, tokenizer, HTTP path, the rest), never a measurement of its speed."),
    )

    def tool(fn: Callable[..., Any]) -> Callable[..., Any]:
        server.add_tool(fn, description=inspect.getdoc(fn))
        return fn

    @tool
    async def profile(seconds: float = ctx.default_seconds, native: bool = False) -> str:
        """Profile the candidate: start it as the gates do (in its sandbox), drive it with the target's own
        benchmark load for `seconds` (at most the run's limit), and sample it with py-spy (`native`: also C/C++
        frames, e.g. inside PyTorch; slower). Returns where the time went (model forward, tokenizer, HTTP
        path, other) and the top frames by self and total time, and names the folder with the flame graph
        (flamegraph.svg), the speedscope profile and the raw stacks. On a CUDA target with Nsight Systems
        installed it also records the GPU side of the same load (nsys.nsys-rep) and summarises it: top kernels
        by GPU time, kernels against memory copies, CUDA API calls. A profile is slowed by the profiler:
        it is never a measurement, and it waits while a benchmark runs."""
        secs = min(max(float(seconds), MIN_SECONDS), ctx.max_seconds)
        out = ctx.next_dir()
        job = ProfileJob(target_root=ctx.target_root, workdir=ctx.workdir, out_dir=out, jail=ctx.jail, seconds=secs)
        try:
            made = await anyio.to_thread.run_sync(
                lambda: profile_candidate(job, ctx.sandbox_of(), ctx.bench_lock, native=bool(native),
                                          lock_wait_s=ctx.lock_wait_s))
        except ProfileFailed as e:
            (out / "error.txt").write_text(str(e) + "\n")
            raise ToolError(f"no profile ({out.name}): {e}") from None
        return made.summary

    return server


def server_spec(context_file: Path, python: str | None = None) -> McpServerSpec:
    """How a harness starts this server for one agent call."""
    return McpServerSpec(name=SERVER_NAME, command=[python or sys.executable, "-P", "-m", MODULE,
                                                    "--context", str(context_file)], tools=list(TOOLS),
                         tool_timeout_s=TOOL_TIMEOUT_S)


def for_call(role: str, target_root: Path, workdir: Path, attempt_dir: Path, bench_lock: Path,
             sandbox: Sandbox | None, jail: CandidateJail | None) -> McpServerSpec:
    """Write the context of one agent call's ``profile`` tool into ``attempt_dir`` and say how to serve it."""
    boxed = sandbox is not None and sandbox.active
    ctx = ProfileContext(
        role=role, target_root=target_root, workdir=workdir, profiles_dir=attempt_dir / "profiles",
        bench_lock=bench_lock, jail=jail or CandidateJail(mode=SandboxMode.NONE),
        sandbox=sandbox.mode if boxed else SandboxMode.NONE, run_dir=sandbox.run_dir if boxed else None,
        bwrap=sandbox.binary if boxed else "bwrap", readable=sandbox.readable if boxed else [],
    )
    attempt_dir.mkdir(parents=True, exist_ok=True)
    path = attempt_dir / f"profile-context-{role}.json"
    path.write_text(ctx.model_dump_json(indent=1))
    return server_spec(path)


def main(argv: list[str] | None = None) -> None:
    """Serve the tool over stdio until the client closes stdin."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--context", required=True, type=Path, help="the ProfileContext JSON the round wrote")
    args = parser.parse_args(argv)
    try:
        ctx = ProfileContext.model_validate_json(args.context.read_text())
    except (OSError, ValueError) as e:
        print(f"{MODULE}: cannot read the profile context {args.context}: {e}", file=sys.stderr)
        sys.exit(2)
    build_server(ctx).run("stdio")


if __name__ == "__main__":
    main()
