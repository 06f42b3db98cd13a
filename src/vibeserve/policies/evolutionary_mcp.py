"""The evolutionary policy's MCP server (stdio): ``report_techniques``, the implementer's behaviour descriptor.

Run as ``python -m vibeserve.policies.evolutionary_mcp --run-dir DIR --call-key KEY``. What the implementer
reports names the candidate's cell in the archive (MAP-Elites); a candidate that reports nothing inherits
its parent's techniques.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer

from vibeserve.errors import VibeserveError
from vibeserve.policies.archive import Archive, Batching, Decoding, Descriptor, Kernels, KvCache, Precision
from vibeserve.store.db import RunStore
from vibeserve.types import McpServerSpec

SERVER_NAME = "evolution"
MODULE = "vibeserve.policies.evolutionary_mcp"
TOOLS = ("report_techniques",)


def build_server(archive: Archive, call_key: str) -> MCPServer[Any]:
    """An MCP server recording what the agent call ``call_key`` reports in ``archive``."""
    server: MCPServer[Any] = MCPServer(
        SERVER_NAME,
        instructions="The evolutionary search's archive: report which techniques your serving system uses.",
    )

    async def report_techniques(batching: Batching, kv_cache: KvCache, precision: Precision, decoding: Decoding,
                                kernels: Kernels) -> str:
        """Report the techniques the serving system uses after your change: the whole system, not only
        what you changed. Candidates are grouped by these (one cell per combination) and each group
        keeps its best, so say what is really there. Call it again to correct it; the last call counts.

        batching: none (one request at a time) | static (fixed batches) | continuous (requests join and
            leave the batch every step).
        kv_cache: none (recompute the prefix) | contiguous | paged | prefix-shared.
        precision: fp32 | fp16 | bf16 | int8 | int4 (the weights' format).
        decoding: plain (one token per forward pass) | speculative.
        kernels: eager (framework ops) | compiled (torch.compile or similar) | custom (hand-written kernels).
        """
        d = Descriptor(batching=batching, kv_cache=kv_cache, precision=precision, decoding=decoding,
                       kernels=kernels)
        archive.record_techniques(call_key, d)
        return f"recorded: {d.cell()}"

    server.add_tool(report_techniques, description=inspect.getdoc(report_techniques))
    return server


def server_spec(run_dir: Path, call_key: str, python: str | None = None) -> McpServerSpec:
    """How a harness starts this server for one agent call."""
    # -P: never import from the current directory, which may be one an agent can write.
    return McpServerSpec(name=SERVER_NAME, command=[python or sys.executable, "-P", "-m", MODULE, "--run-dir",
                                                    str(run_dir), "--call-key", call_key], tools=list(TOOLS))


def main(argv: list[str] | None = None) -> None:
    """Serve the tool over stdio until the client closes stdin."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path, help="the run directory holding run.db")
    parser.add_argument("--call-key", required=True, help="the agent call this server serves, e.g. r001/a1/implementer")
    args = parser.parse_args(argv)
    try:
        store = RunStore.open(args.run_dir)
    except VibeserveError as e:
        # Said on stderr, which the harness keeps; stdout belongs to the protocol.
        print(f"{MODULE}: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    try:
        build_server(Archive(store), args.call_key).run("stdio")
    finally:
        store.close()


if __name__ == "__main__":
    main()
