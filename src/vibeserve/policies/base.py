"""The policy protocol: the outer loop's strategy, and what the loop offers it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from vibeserve.roles import Reply
from vibeserve.types import McpServerSpec, Role, RoundResult, Task


class PolicyContext(Protocol):
    """What the loop lends a policy for one decision; the policy never sees a harness."""

    round: int

    def ask(self, role: Role, key: str, prompt: str, workdir: Path, validate: Any = None) -> tuple[Reply, str]:
        """Run one agent call (with schema retries, resumable); return its reply and the key of the try."""
        ...

    def prompt_context(self) -> dict[str, Any]:
        """Target, instructions, metric, best and baseline, recent rounds: shared by every role's prompt."""
        ...

    def revert(self, commit: str, reason: str) -> None:
        """Move the run branch back to an earlier accepted commit."""
        ...

    @property
    def scratch(self) -> Path:
        """A directory an agent without a deliverable to edit (the orchestrator) may work in."""
        ...


class Policy(Protocol):
    name: str
    # The policy's own tables (made with RunStore.ensure_tables) whose rows are its state: saved before each
    # agent call and put back if the call is re-run after a kill. memory.md is always saved with them.
    snapshot_tables: tuple[str, ...]

    def mcp_servers(self, call_key: str, role: Role) -> list[McpServerSpec]:
        """The MCP servers (stdio) an agent in ``role`` gets for the call ``call_key``."""
        ...

    def next_task(self, ctx: PolicyContext) -> Task | None:
        """The next round's task, or None when the policy has nothing left to try."""
        ...

    def observe(self, result: RoundResult) -> None:
        """Take a finished round into the policy's state. Must be idempotent: resume may repeat it."""
        ...


class Admits(Protocol):
    """An optional policy method: ``run_round`` calls it after the implementer commits, before any gate."""

    def admit(self, diff: str, upto_round: int | None = None) -> str | None:
        """Why the candidate with this diff (against its start commit) is refused, or None to run its gates.
        A refusal fails the attempt at no gate cost, and the reason is the implementer's feedback. With
        ``upto_round``, only what the policy learnt from rounds up to that one may count (parallel runs)."""
        ...
