"""The ralph policy: no orchestrator; every round the same brief from the best commit, memory.md carried.

Each round's task is the target's instructions (already in every prompt) plus a fixed brief
(``prompts/brief_ralph.j2``) holding memory.md, starting from the run's best commit. The implementer
rewrites memory.md's notes through the ``memory`` MCP server; after each round the policy appends one line
(round, status, metric, reason) to its round log, so failures are remembered.
"""

from __future__ import annotations

from vibeserve.policies.base import PolicyContext
from vibeserve.policies.memory import RoundMemory
from vibeserve.policies.ralph_mcp import server_spec
from vibeserve.roles import render_brief
from vibeserve.store import RunStore
from vibeserve.types import McpServerSpec, Role, RoundResult, Task

TITLE = "Make it faster"
CRITERIA = ["answers still come from running the model and are as correct as before",
            "the change aims at the metric (speed), not at the checks"]


def round_line(result: RoundResult) -> str:
    """The round log's line for ``result``: status, metric, and one line of why."""
    line = str(result.status)
    if result.metric is not None:
        line += f", metric {result.metric:.4g}"
    if result.reason.strip():
        line += f": {result.reason.strip().splitlines()[0][:200]}"
    elif result.hints:
        line += f"; hint: {result.hints[0][:200]}"
    return line


class RalphPolicy:
    name = "ralph"
    snapshot_tables: tuple[str, ...] = ()  # its state is memory.md and tables no agent call changes

    def __init__(self, store: RunStore):
        self.store = store
        self.memory = RoundMemory(store.memory_path)

    def mcp_servers(self, call_key: str, role: Role) -> list[McpServerSpec]:
        # Only the implementer keeps the memory; the judge and evaluator judge the round as it is.
        return [server_spec(self.store.dir)] if role == Role.IMPLEMENTER else []

    def next_task(self, ctx: PolicyContext) -> Task | None:
        best = ctx.prompt_context()["best_commit"]
        return Task(start_commit=best, brief=render_brief("ralph", memory=self.memory.read().strip()),
                    acceptance_criteria=CRITERIA, title=TITLE)

    def observe(self, result: RoundResult) -> None:
        self.memory.record_round(result.round, round_line(result))
