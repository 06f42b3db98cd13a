"""The issue-tracker policy's MCP server (stdio): the backlog, start points and memory.md, as agent tools.

Run as ``python -m vibeserve.policies.issue_tracker_mcp --run-dir DIR --call-key KEY --role ROLE``.
Every role may read the backlog and file issues; only the orchestrator may change statuses, pick the next
issue, revert and rewrite memory.md. The tools the agent gets are exactly the ones its role may use, so
a refused tool is never offered in the first place.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from vibeserve.errors import VibeserveError
from vibeserve.policies.board import BoardError, Candidate, Issue, IssueBoard, IssueStatus, Pick, Revert
from vibeserve.store.db import RunStore
from vibeserve.types import McpServerSpec, Role

SERVER_NAME = "issue-tracker"
MODULE = "vibeserve.policies.issue_tracker_mcp"
COMMON_TOOLS = ("list_issues", "get_issue", "create_issue", "read_memory", "list_candidates")
ORCHESTRATOR_TOOLS = ("update_issue", "pick_next", "revert", "write_memory")

T = TypeVar("T")


def _agent_error(fn: Callable[[], T]) -> T:
    """Run ``fn``; a BoardError becomes a ToolError, which the SDK sends back as an isError result."""
    try:
        return fn()
    except BoardError as e:
        raise ToolError(str(e)) from e


def tools_for(role: Role | str) -> tuple[str, ...]:
    """The names of the tools ``role`` gets."""
    return COMMON_TOOLS + (ORCHESTRATOR_TOOLS if Role(role) == Role.ORCHESTRATOR else ())


def build_server(store: RunStore, call_key: str, role: Role | str) -> MCPServer[Any]:
    """An MCP server whose tools act on ``store`` on behalf of the agent call ``call_key`` in ``role``."""
    role = Role(role)
    board = IssueBoard(store)
    server: MCPServer[Any] = MCPServer(
        SERVER_NAME,
        instructions=(
            "The issue tracker of this vibeserve run: a backlog of issues (hypotheses about what will make "
            "the serving system faster, each with acceptance criteria), the commits you may start from, and "
            "memory.md, the run's long-term memory."
        ),
    )

    def tool(fn: Callable[..., Any]) -> Callable[..., Any]:
        # getdoc strips the docstring's indentation, which would otherwise reach the agent verbatim.
        server.add_tool(fn, description=inspect.getdoc(fn))
        return fn

    # Tools are async on purpose: they run one at a time on the event loop, so calls never race on the
    # single SQLite connection (sync tools would run on worker threads).

    @tool
    async def list_issues(status: IssueStatus | None = None) -> list[Issue]:
        """List the issues in the backlog (oldest first), optionally only those with one status.

        status: open | in_progress | done | failed | dropped; omit it for all issues.
        """
        return _agent_error(lambda: board.list_issues(status))

    @tool
    async def get_issue(issue_id: int) -> Issue:
        """Get one issue: title, hypothesis, acceptance criteria, status, priority, notes and linked rounds."""
        return _agent_error(lambda: board.get_issue(issue_id))

    @tool
    async def create_issue(
        title: str,
        hypothesis: str,
        acceptance_criteria: list[str],
        priority: Annotated[int, Field(ge=1, le=3)] = 2,
    ) -> Issue:
        """File a new open issue and return it with its id.

        title: short imperative summary ("Batch concurrent requests").
        hypothesis: why this should improve the metric, and by roughly how much.
        acceptance_criteria: checkable statements that say when the issue is done.
        priority: 1 (do first) to 3 (nice to have).
        """
        return _agent_error(
            lambda: board.create_issue(title, hypothesis, acceptance_criteria, priority, created_by=call_key)
        )

    @tool
    async def read_memory() -> str:
        """Read memory.md, the run's long-term memory (what was tried, what worked, what to avoid)."""
        return _agent_error(board.read_memory) or "(memory.md is empty)"

    @tool
    async def list_candidates() -> list[Candidate]:
        """List the commits you may start from: the baseline and every kept or accepted round, with the
        framework-measured metric; is_best marks the commit the run branch points at."""
        return _agent_error(board.candidates)

    if role != Role.ORCHESTRATOR:
        return server

    @tool
    async def update_issue(
        issue_id: int,
        status: IssueStatus | None = None,
        notes: str | None = None,
        priority: Annotated[int, Field(ge=1, le=3)] | None = None,
        add_round: int | None = None,
    ) -> Issue:
        """Change an issue and return it. Pass only what changes.

        status: open | in_progress | done | failed | dropped.
        notes: text appended to the issue's notes (earlier notes are kept).
        priority: 1 (do first) to 3.
        add_round: link a round number that worked on this issue.
        """
        return _agent_error(lambda: board.update_issue(issue_id, status, notes, priority, add_round))

    @tool
    async def pick_next(issue_id: int, start_commit: str = "best") -> Pick:
        """Choose the issue the next round works on and the commit it starts from.

        issue_id: an open or in_progress issue.
        start_commit: "best" (the run's best commit), "baseline", "round-N" (round N's candidate, kept or
            accepted), or a commit listed by list_candidates.
        Calling it again in the same turn replaces the earlier pick.
        """
        return _agent_error(lambda: board.pick_next(call_key, issue_id, start_commit))

    @tool
    async def revert(commit: str, reason: str) -> Revert:
        """Move the run back to an earlier commit (the baseline or a commit from list_candidates),
        e.g. when the best commit turned out to be a dead end. reason: what went wrong."""
        return _agent_error(lambda: board.revert(call_key, commit, reason))

    @tool
    async def write_memory(text: str) -> str:
        """Replace memory.md with text. Read it first and keep what still matters: it is the only
        thing later rounds remember."""
        board.write_memory(text)
        return f"memory.md saved ({len(text)} characters)"

    return server


def server_spec(run_dir: Path, call_key: str, role: Role | str, python: str | None = None) -> McpServerSpec:
    """How a harness starts this server for one agent call."""
    return McpServerSpec(
        name=SERVER_NAME,
        command=[python or sys.executable, "-P", "-m", MODULE, "--run-dir", str(run_dir), "--call-key", call_key,
                 "--role", str(Role(role))],
    )


def main(argv: list[str] | None = None) -> None:
    """Serve the tools over stdio until the client closes stdin."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path, help="the run directory holding run.db")
    parser.add_argument("--call-key", required=True, help="the agent call this server serves, e.g. r001/orchestrator")
    parser.add_argument("--role", required=True, choices=[str(r) for r in Role])
    args = parser.parse_args(argv)
    try:
        store = RunStore.open(args.run_dir)
    except VibeserveError as e:
        # Said on stderr, which the harness keeps; stdout belongs to the protocol.
        print(f"{MODULE}: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    try:
        build_server(store, args.call_key, args.role).run("stdio")
    finally:
        store.close()


if __name__ == "__main__":
    main()
