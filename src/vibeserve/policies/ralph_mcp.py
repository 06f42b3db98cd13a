"""The ralph policy's MCP server (stdio): ``memory.md`` as the implementer's tools.

Run as ``python -m vibeserve.policies.ralph_mcp --run-dir DIR``. ``read_memory`` returns the notes and the
round log; ``write_memory`` replaces the notes and keeps the log, which only the policy appends to.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from vibeserve.policies.memory import MemoryRefused, RoundMemory
from vibeserve.store.db import RunStore
from vibeserve.types import McpServerSpec

SERVER_NAME = "memory"
MODULE = "vibeserve.policies.ralph_mcp"
TOOLS = ("read_memory", "write_memory")


def build_server(memory: RoundMemory) -> MCPServer[Any]:
    """An MCP server whose tools read and rewrite ``memory``."""
    server: MCPServer[Any] = MCPServer(
        SERVER_NAME,
        instructions=("memory.md, the only thing this run carries from one round to the next: your notes, and a "
                      "log of every finished round that vibeserve keeps."),
    )

    def tool(fn: Callable[..., Any]) -> Callable[..., Any]:
        server.add_tool(fn, description=inspect.getdoc(fn))
        return fn

    @tool
    async def read_memory() -> str:
        """Read memory.md: the notes earlier rounds left, then the round log (status, metric, reason)."""
        return memory.read() or "(memory.md is empty)"

    @tool
    async def write_memory(text: str) -> str:
        """Replace the notes in memory.md with text (the round log below them is kept by vibeserve).
        Keep what still matters: what was tried, what worked, what failed and why, what to try next.
        The next round sees nothing else of this one."""
        try:
            memory.write_notes(text)
        except MemoryRefused as e:
            raise ToolError(str(e)) from e
        return f"memory.md notes saved ({len(text)} characters)"

    return server


def server_spec(run_dir: Path, python: str | None = None) -> McpServerSpec:
    """How a harness starts this server for one agent call."""
    # -P: never import from the current directory, which may be one an agent can write.
    return McpServerSpec(name=SERVER_NAME, command=[python or sys.executable, "-P", "-m", MODULE,
                                                    "--run-dir", str(run_dir)], tools=list(TOOLS))


def main(argv: list[str] | None = None) -> None:
    """Serve the tools over stdio until the client closes stdin."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path, help="the run directory holding run.db")
    args = parser.parse_args(argv)
    if not (args.run_dir / RunStore.FILE).is_file():
        # Said on stderr, which the harness keeps; stdout belongs to the protocol.
        print(f"{MODULE}: {args.run_dir} is not a vibeserve run (no {RunStore.FILE})", file=sys.stderr)
        sys.exit(2)
    build_server(RoundMemory(args.run_dir / "memory.md")).run("stdio")


if __name__ == "__main__":
    main()
