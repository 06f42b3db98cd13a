"""The issue-tracker policy: an orchestrator agent keeps a backlog of issues over MCP and picks one per round."""

from __future__ import annotations

import sys

from vibeserve.policies.base import PolicyContext
from vibeserve.policies.board import SNAPSHOT_TABLES, IssueBoard
from vibeserve.policies.issue_tracker_mcp import tools_for
from vibeserve.roles import Reply, ReplyInvalid, render_prompt
from vibeserve.store import RunStore
from vibeserve.types import McpServerSpec, Role, RoundResult, RoundStatus, Task


class IssueTrackerPolicy:
    name = "issue-tracker"
    snapshot_tables = SNAPSHOT_TABLES

    def __init__(self, store: RunStore):
        self.store = store
        self.board = IssueBoard(store)

    def mcp_servers(self, call_key: str, role: Role) -> list[McpServerSpec]:
        return [
            McpServerSpec(
                name="issues",
                # -P: never import from the current directory, which may be one an agent can write.
                command=[sys.executable, "-P", "-m", "vibeserve.policies.issue_tracker_mcp",
                         "--run-dir", str(self.store.dir), "--call-key", call_key, "--role", str(role)],
                tools=list(tools_for(role)),
            )
        ]

    def next_task(self, ctx: PolicyContext) -> Task | None:
        key = f"r{ctx.round:03d}/orchestrator"
        prompt = render_prompt(
            Role.ORCHESTRATOR,
            **ctx.prompt_context(),
            memory=self.board.read_memory(),
        )

        def picked(_: Reply, try_key: str) -> None:
            if self.board.pick_for(try_key) is None:
                raise ReplyInvalid("no issue was picked: call the pick_next tool with an issue id and a start commit")

        _, try_key = ctx.ask(Role.ORCHESTRATOR, key, prompt, ctx.scratch, validate=picked)
        for revert in self.board.reverts_for(try_key):
            ctx.revert(revert.commit, revert.reason)
        issue_id, start = self.board.pick_for(try_key)
        issue = self.board.get_issue(issue_id)
        brief = issue.hypothesis or issue.title
        if issue.notes:
            brief += f"\n\nNotes from earlier rounds:\n{issue.notes}"
        return Task(
            start_commit=start,
            brief=brief,
            acceptance_criteria=issue.acceptance_criteria,
            issue_id=issue.id,
            title=issue.title,
        )

    def observe(self, result: RoundResult) -> None:
        if result.task.issue_id is None:
            return
        issue = self.board.get_issue(result.task.issue_id)
        if result.round in issue.rounds:
            return  # already taken in before a restart
        status = {
            RoundStatus.KEPT: "done",
            RoundStatus.ACCEPTED: "done",
        }.get(result.status, "open")
        outcome = f"round {result.round}: {result.status}"
        if result.metric is not None:
            outcome += f", metric {result.metric:.4g}"
        if result.reason:
            outcome += f" ({result.reason.splitlines()[0][:200]})"
        if result.hints:
            outcome += "; hints: " + "; ".join(result.hints[:3])
        self.board.update_issue(issue.id, status=status, notes=outcome, add_round=result.round)
