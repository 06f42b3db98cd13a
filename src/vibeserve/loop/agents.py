"""Agent calls as the loop makes them: journaled, resumable, schema-checked and retried, within budget."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from vibeserve import process
from vibeserve.errors import BudgetExceeded
from vibeserve.harness import Harness
from vibeserve.policies.base import Policy
from vibeserve.roles import Reply, ReplyInvalid, parse_reply, reply_schema
from vibeserve.skills.install import installed_paths
from vibeserve.store import RunStore
from vibeserve.types import AgentCall, AgentResult, ExitReason, McpServerSpec, Role

log = logging.getLogger(__name__)

Validator = Callable[[Reply, str], None]


class AgentFailed(Exception):
    """An agent call ended without a usable reply (timeout, crash, or schema retries used up)."""


class Aborted(Exception):
    """The run is being interrupted: what a call or gate in flight returns now is not recorded, so resume
    runs it again rather than taking a killed process for the agent's answer."""


class AgentRunner:
    """Runs agent calls for the loop; a call already recorded in the store is read back, never re-run."""

    def __init__(
        self,
        store: RunStore,
        harnesses: dict[Role, Harness],
        models: dict[Role, str | None],
        policy: Policy,
        timeout_s: float,
        max_cost_usd: float,
        schema_retries: int,
        on_call: Callable[[str, Role, AgentResult], None] | None = None,
        say: Callable[[str], None] | None = None,
        abort: threading.Event | None = None,
        dispatch: Callable[[Harness, AgentCall], AgentResult] | None = None,
    ):
        self.store, self.harnesses, self.models, self.policy = store, harnesses, models, policy
        self.timeout_s, self.max_cost_usd, self.schema_retries = timeout_s, max_cost_usd, schema_retries
        self.on_call = on_call
        self.say = say or (lambda s: None)
        self.abort = abort
        self.dispatch = dispatch or (lambda harness, call: harness.run(call))  # or on a Ray cluster

    def ask(
        self, role: Role, key: str, prompt: str, workdir: Path, round_: int, attempt: int,
        validate: Validator | None = None, tools: Sequence[McpServerSpec] = (),
    ) -> tuple[Reply, str]:
        """One logical call: up to ``1 + schema_retries`` tries, each a separate, journaled agent call.

        A try whose reply fails the schema (or ``validate``) is retried with the error appended to the
        prompt. ``tools``: MCP servers the framework gives this call besides the policy's (the profiler).
        Returns the parsed reply and the key of the try that produced it.
        """
        feedback = ""
        for n in range(1, self.schema_retries + 2):
            try_key = key if n == 1 else f"{key}/t{n}"
            result = self._call(role, try_key, prompt + feedback, workdir, round_, attempt, tools)
            if result.exit_reason not in (ExitReason.OK, ExitReason.SCHEMA):
                raise AgentFailed(f"{role} call {try_key} ended with {result.exit_reason}: {result.error}")
            try:
                reply = parse_reply(role, result.reply)
                if validate is not None:
                    validate(reply, try_key)
            except ReplyInvalid as e:
                log.info("reply of %s rejected: %s", try_key, e)
                self.say(f"  {try_key}: reply rejected ({' '.join(str(e).split())[:300]}); "
                         + ("asking again" if n <= self.schema_retries else "no tries left"))
                feedback = (
                    f"\n\n## Your previous reply was rejected\n{e}\nReply again, exactly in the schema."
                )
                continue
            return reply, try_key
        raise AgentFailed(f"{role} call {key}: no valid reply after {self.schema_retries + 1} tries ({feedback.strip()})")

    def _call(self, role: Role, key: str, prompt: str, workdir: Path, round_: int, attempt: int,
              tools: Sequence[McpServerSpec] = ()) -> AgentResult:
        row = self.store.agent_call(key)
        if row is not None:
            return AgentResult(
                reply=json.loads(row["reply"]) if row["reply"] else None,
                exit_reason=ExitReason(row["exit_reason"]),
                wall_s=row["wall_s"],
                error=row["error"],
            )
        # Stop before a call that would pass the cap, taking the dearest call so far as its likely cost.
        spent, dearest = self.store.total_cost(), self.store.max_call_cost()
        if spent + dearest > self.max_cost_usd or spent >= self.max_cost_usd:
            raise BudgetExceeded(
                f"cost budget: ${spent:.2f} spent of ${self.max_cost_usd:.2f}, and the next call may cost "
                f"${dearest:.2f}"
            )
        # A try killed half-way may have changed policy state; start it again from what the first try saw.
        tables = getattr(self.policy, "snapshot_tables", ())
        if not self.store.restore_policy_state(key, tables):
            self.store.snapshot_policy_state(key, tables)
        harness = self.harnesses[role]
        call = AgentCall(
            key=key,
            role=role,
            prompt=prompt,
            workdir=workdir,
            reply_schema=reply_schema(role),
            mcp_servers=[*self.policy.mcp_servers(key, role), *tools],
            timeout_s=self.timeout_s,
            transcript_path=self.store.transcripts / (key.replace("/", "-") + ".jsonl"),
            model=self.models.get(role),
            readonly=installed_paths(workdir),
        )
        # The groups the call starts (an agent CLI, its commands) are recorded while they live: a run killed
        # with -9 leaves them behind, and resume stops them before anything starts.
        recorder = process.GroupRecorder(self.store.add_process, self.store.remove_process, key)
        with process.recording(recorder):
            result = self.dispatch(harness, call)
        if self.abort is not None and self.abort.is_set():
            raise Aborted(f"{key}: the run is being interrupted; this call is not recorded")
        self.store.record_agent_call(key, round_, attempt, role, harness.name, call.model, result)
        if self.on_call:
            self.on_call(key, role, result)
        return result
