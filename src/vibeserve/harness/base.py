"""The harness protocol: one agent call in, one ``AgentResult`` out, whatever program runs the agent."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from vibeserve.types import AgentCall, AgentResult


@runtime_checkable
class Harness(Protocol):
    """Runs one agent to completion (or its timeout) and returns what it replied.

    A harness validates the reply against ``call.reply_schema`` only as far as its program does; the loop
    validates again and retries with the error. A harness never raises for an agent's failure: it returns
    an ``AgentResult`` whose ``exit_reason`` says what went wrong. It raises ``HarnessError`` only when it
    cannot start at all (missing binary, unreadable script).
    """

    name: str

    def check(self) -> None:
        """Raise ``HarnessError`` now if this harness cannot run (checked before any round starts)."""
        ...

    def run(self, call: AgentCall) -> AgentResult: ...
