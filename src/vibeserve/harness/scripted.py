"""The scripted harness: replays a folder of steps (MCP tool calls, patches, files, replies) as an agent would.

It is the test double of every other harness and drives the offline demo. A trajectory is a folder with
``trajectory.toml``: ``version = 1``, ``description``, and ``[[call]]`` tables (fields: see ``Step``). A call
runs the step whose ``key`` equals its key, else the first whose key is an fnmatch pattern matching it
("r*/a*/judge"; the whole key must match and "*" crosses "/", so "r001/a1/judge/t2" needs a pattern
such as "r*/a*/judge/t*"). A step's actions run in this order:
MCP tool calls, patch, files, delete, commands, sleep, then the reply (or the scripted failure). The MCP
calls go through the official SDK's stdio client to the real servers in ``call.mcp_servers``, so a
trajectory exercises the same tools a real agent gets.
"""

from __future__ import annotations

import fnmatch
import shutil
import time
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vibeserve import process
from vibeserve.errors import HarnessError
from vibeserve.harness.mcp_client import McpSession, McpStartError, error_message
from vibeserve.harness.transcript import Transcript
from vibeserve.sandbox import Sandbox, SandboxMode
from vibeserve.types import AgentCall, AgentResult, ExitReason, McpServerSpec

FILE = "trajectory.toml"


def _relative(path: str) -> None:
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"{path!r} must be a relative path inside the directory, without '..'")


class McpStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class Step(BaseModel):
    """One ``[[call]]`` of a trajectory."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1)
    mcp: list[McpStep] = Field(default_factory=list)
    patch: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
    delete: list[str] = Field(default_factory=list)
    commands: list[list[str]] = Field(default_factory=list)
    sleep_s: float = Field(default=0.0, ge=0)
    reply: dict[str, Any] | None = None
    fail: Literal["timeout", "error"] | None = None
    # What the replayed call reports it used, so budgets and reports can be exercised offline.
    tokens_in: int = Field(default=0, ge=0)
    tokens_out: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _inside_workdir(self) -> Step:
        # Paths stay inside the worktree (and the patch inside the trajectory): a replay never writes elsewhere.
        for path in [*([self.patch] if self.patch else []), *self.files, *self.delete]:
            _relative(path)
        if any(not argv for argv in self.commands):
            raise ValueError("every command is a non-empty argv list")
        return self


class Trajectory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    description: str = ""
    call: list[Step] = Field(default_factory=list)

    def step_for(self, key: str) -> Step | None:
        """The exact-key step, else the first step whose key is an fnmatch pattern matching ``key``."""
        for step in self.call:
            if step.key == key:
                return step
        return next((s for s in self.call if fnmatch.fnmatchcase(key, s.key)), None)


class _Timeout(Exception):
    """The call's deadline passed."""


class ScriptedHarness:
    """Replays ``trajectory/trajectory.toml``: each agent call runs the step its key matches."""

    name = "scripted"

    def __init__(self, trajectory: Path, sandbox: Sandbox | None = None):
        # A replay's patches, files and MCP calls are the framework's own doing; its commands stand for an
        # agent's shell tool, so they run in the agent sandbox (with no network at all).
        self.sandbox = sandbox or Sandbox(SandboxMode.NONE)
        self.dir = Path(trajectory)
        self.file = self.dir / FILE
        self._trajectory: Trajectory | None = None

    # -- loading --------------------------------------------------------------------------------------
    def check(self) -> None:
        """Parse the trajectory and check every patch file exists; HarnessError names file and [[call]]."""
        self._trajectory = self._load()

    def _load(self) -> Trajectory:
        try:
            data = tomllib.loads(self.file.read_text())
        except (OSError, UnicodeDecodeError) as e:
            raise HarnessError(f"{self.file}: cannot read the trajectory ({e})") from None
        except tomllib.TOMLDecodeError as e:
            raise HarnessError(f"{self.file}: not valid TOML: {e}") from None
        try:
            traj = Trajectory.model_validate(data)
        except ValidationError as e:
            raise HarnessError(f"{self.file}: {self._explain(e, data)}") from None
        for i, step in enumerate(traj.call):
            if step.patch and not (self.dir / step.patch).is_file():
                raise HarnessError(
                    f"{self.file}: [[call]] {i} (key {step.key!r}): patch file {self.dir / step.patch} does not exist"
                )
        return traj

    @staticmethod
    def _explain(e: ValidationError, data: dict[str, Any]) -> str:
        msgs = []
        for err in e.errors():
            loc = list(err["loc"])
            if len(loc) >= 2 and loc[0] == "call" and isinstance(loc[1], int):
                i = loc[1]
                calls = data.get("call")
                key = calls[i].get("key") if isinstance(calls, list) and isinstance(calls[i], dict) else None
                where = f"[[call]] {i}" + (f" (key {key!r})" if key else "")
                field = ".".join(str(p) for p in loc[2:]) or "entry"
                msgs.append(f"{where}: {field}: {err['msg']}")
            else:
                msgs.append(f"{'.'.join(str(p) for p in loc) or 'top level'}: {err['msg']}")
        return "; ".join(msgs)

    # -- running --------------------------------------------------------------------------------------
    def run(self, call: AgentCall) -> AgentResult:
        """Run the step matching ``call.key`` within ``call.timeout_s``."""
        if self._trajectory is None:
            self._trajectory = self._load()
        started = time.monotonic()
        deadline = started + call.timeout_s
        call.transcript_path.parent.mkdir(parents=True, exist_ok=True)

        step = self._trajectory.step_for(call.key)

        def result(reason: ExitReason, reply: dict[str, Any] | None = None, error: str = "") -> AgentResult:
            return AgentResult(
                reply=reply, exit_reason=reason, wall_s=time.monotonic() - started,
                tokens_in=step.tokens_in if step else 0, tokens_out=step.tokens_out if step else 0,
                cost_usd=step.cost_usd if step else 0.0, transcript_path=call.transcript_path, error=error,
            )

        with Transcript(call, self.name) as log:
            log.event("message", text=f"replaying [[call]] {step.key if step else None!r} of {self.file}")
            if step is None:
                error = (f"no [[call]] in {self.file} matches call key {call.key!r}; add one with "
                         f"key = {call.key!r} or a pattern that matches it")
                log.event("error", exit_reason="error", error=error)
                return result(ExitReason.ERROR, error=error)
            try:
                error = self._play(step, call, deadline, log)
            except _Timeout:
                error = f"the call ran past its timeout of {call.timeout_s:g} s"
                log.event("error", exit_reason="timeout", error=error)
                return result(ExitReason.TIMEOUT, error=error)
            if error:
                log.event("error", exit_reason="error", error=error)
                return result(ExitReason.ERROR, error=error)
            if step.fail:
                error = f"scripted failure: {step.fail}"
                log.event("error", exit_reason=step.fail, error=error)
                return result(ExitReason(step.fail), error=error)
            log.event("reply", reply=step.reply)
            return result(ExitReason.OK, reply=step.reply)

    def _play(self, step: Step, call: AgentCall, deadline: float, log: Transcript) -> str:
        """Do the step's actions; return an error message, or "" when all went through."""

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Timeout
            return left

        if step.mcp:
            if not call.mcp_servers:
                return f"[[call]] {step.key!r} calls MCP tools but the call was given no MCP servers"
            error = self._mcp(step, call, remaining(), log)
            if error:
                return error
        logs = call.transcript_path.with_suffix(".logs")
        if step.patch:
            patch = (self.dir / step.patch).resolve()
            try:
                done = process.run(["git", "apply", "--whitespace=nowarn", str(patch)], call.workdir, logs,
                                   "git-apply", timeout_s=remaining(), env=process.clean_env())
            except process.CommandNotRunnable as e:
                return f"cannot apply {patch}: {e}"
            if done.timed_out:
                raise _Timeout
            log.event("tool_call", name="apply_patch", arguments={"path": str(patch)})
            log.event("tool_result", name="apply_patch", output=done.tail(), is_error=done.returncode != 0)
            if done.returncode != 0:
                return f"git apply {patch} failed in {call.workdir}: {done.tail().strip()}"
        if step.files or step.delete:
            try:
                missing = self._edit_files(step, call.workdir)
            except OSError as e:
                return f"cannot edit files in {call.workdir}: {e}"
            log.event("tool_call", name="write_files", arguments={"written": list(step.files),
                                                                   "deleted": list(step.delete)})
            log.event("tool_result", name="write_files", output={"missing": missing}, is_error=bool(missing))
        for i, argv in enumerate(step.commands):
            try:
                done = process.run(self.sandbox.agent_argv(argv, call.workdir, readonly=call.readonly), call.workdir, logs,
                                   f"command-{i}", timeout_s=remaining(), env=process.clean_env(call.env))
            except process.CommandNotRunnable as e:
                # A real agent would read "command not found" and go on; so does the replay.
                log.event("tool_call", name="shell", arguments={"argv": argv})
                log.event("tool_result", name="shell", output=str(e), is_error=True)
                continue
            log.event("tool_call", name="shell", arguments={"argv": argv})
            log.event("tool_result", name="shell", output=done.tail(), is_error=done.returncode != 0,
                      returncode=done.returncode, timed_out=done.timed_out, wall_s=round(done.wall_s, 3))
            if done.timed_out:
                raise _Timeout
        if step.sleep_s:
            left = remaining()
            time.sleep(min(step.sleep_s, left))
            if step.sleep_s >= left:
                raise _Timeout
        return ""

    @staticmethod
    def _edit_files(step: Step, workdir: Path) -> list[str]:
        """Write and delete the step's files; return the deletions that found nothing."""
        for rel, text in step.files.items():
            target = workdir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        missing = []
        for rel in step.delete:
            target = workdir / rel
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            else:
                missing.append(rel)
        return missing

    # -- MCP ------------------------------------------------------------------------------------------
    def _mcp(self, step: Step, call: AgentCall, timeout_s: float, log: Transcript) -> str:
        async def body() -> str:
            with anyio.move_on_after(timeout_s) as scope:
                return await self._mcp_session(step, call, log)
            if scope.cancelled_caught:
                raise _Timeout
            return ""  # unreachable: the block either returned or was cancelled

        try:
            return anyio.run(body)
        except _Timeout:
            raise
        except Exception as e:  # noqa: BLE001 - a harness reports an agent-side failure, it never raises it
            return f"the MCP session failed: {error_message(e)}"

    async def _mcp_session(self, step: Step, call: AgentCall, log: Transcript) -> str:
        try:
            async with McpSession(_servers_for(step, call.mcp_servers), call.transcript_path.parent,
                                  call.transcript_path.with_suffix(".logs")) as mcp:
                for entry in step.mcp:
                    log.event("tool_call", name=entry.tool, arguments=entry.arguments, server=mcp.server_of(entry.tool))
                    res = await mcp.call(entry.tool, entry.arguments)
                    # An agent asking for a tool it lacks, or getting a tool error, reads it and carries on.
                    log.event("tool_result", name=entry.tool, server=mcp.server_of(entry.tool), is_error=res.is_error,
                              text=res.text, structured=res.structured)
        except McpStartError as e:
            return str(e)
        return ""


def _servers_for(step: Step, servers: list[McpServerSpec]) -> list[McpServerSpec]:
    """The servers a step's tool calls need: those that declare one of its tools (or declare none). Every
    server when a tool is declared by none, so that the error lists all the tools there are."""
    wanted = {entry.tool for entry in step.mcp}
    if not wanted <= {t for s in servers for t in s.tools}:
        return servers
    return [s for s in servers if not s.tools or wanted & set(s.tools)]
