"""Core data types shared by every part of vibeserve. This module imports no other vibeserve module."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Role(enum.StrEnum):
    """The four agent roles of the loop."""

    ORCHESTRATOR = "orchestrator"
    IMPLEMENTER = "implementer"
    JUDGE = "judge"
    EVALUATOR = "evaluator"


class GateName(enum.StrEnum):
    ACCURACY = "accuracy"
    PROBES = "probes"
    BENCHMARK = "benchmark"


class RoundStatus(enum.StrEnum):
    """How a round ended. ``kept`` moved the run branch; ``accepted`` passed every gate without a gain."""

    RUNNING = "running"
    KEPT = "kept"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Task(Frozen):
    """What the policy hands the inner loop for one round."""

    start_commit: str
    brief: str
    acceptance_criteria: list[str] = Field(default_factory=list)
    issue_id: int | None = None
    title: str = ""


class McpServerSpec(Frozen):
    """An MCP server (stdio) that a harness gives its agent."""

    name: str
    command: list[str]
    env: dict[str, str] = Field(default_factory=dict)
    tools: list[str] = Field(default_factory=list)  # the tool names it serves, for harnesses that list allowed tools
    tool_timeout_s: float | None = None  # how long one of its tools may take, where the agent CLI bounds it


class AgentCall(Frozen):
    """One agent invocation: everything a harness needs, nothing about policies."""

    key: str  # unique in the run, e.g. "r003/a1/implementer"; the resume journal is keyed by it
    role: Role
    prompt: str
    workdir: Path
    reply_schema: dict[str, Any]
    mcp_servers: list[McpServerSpec] = Field(default_factory=list)
    timeout_s: float = 3600.0
    transcript_path: Path
    model: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    readonly: list[Path] = Field(default_factory=list)  # inside workdir, kept read-only (installed skills)


class ExitReason(enum.StrEnum):
    OK = "ok"
    TIMEOUT = "timeout"
    ERROR = "error"
    SCHEMA = "schema"  # the reply did not validate against the role's schema


class AgentResult(Frozen):
    """What came back from one agent call."""

    reply: dict[str, Any] | None
    exit_reason: ExitReason
    wall_s: float
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost_usd: float | None = None
    transcript_path: Path | None = None
    error: str = ""


class GateVerdict(Frozen):
    """The outcome of one framework-run gate on one candidate commit."""

    gate: GateName
    passed: bool
    commit: str
    reason: str = ""  # one line: why it failed
    detail: str = ""  # the evidence (log tails) for the implementer; the full logs stay on disk
    warnings: list[str] = Field(default_factory=list)  # e.g. a busy machine while it measured
    target_error: bool = False  # the target's own command (the checker) failed, not the candidate
    metric: float | None = None  # benchmark: the median of the repeats
    samples: list[float] = Field(default_factory=list)
    spread: float | None = None  # benchmark: (max - min) / median
    report: dict[str, Any] = Field(default_factory=dict)
    command: list[str] = Field(default_factory=list)
    started_at: float = 0.0
    wall_s: float = 0.0


class RoundResult(Frozen):
    """What a round hands back to the policy and the store."""

    round: int
    task: Task
    status: RoundStatus
    candidate: str | None = None  # the last commit the implementer produced
    attempts: int = 0
    metric: float | None = None
    verdicts: list[GateVerdict] = Field(default_factory=list)
    judge_reasons: str = ""
    analysis: str = ""
    hints: list[str] = Field(default_factory=list)
    reason: str = ""
