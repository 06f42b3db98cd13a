"""The built-in agent: a tool loop over any OpenAI-compatible Chat Completions endpoint.

Hosted APIs, or a local vLLM, llama.cpp or Ollama server. The model gets tools to read, write and edit
files and run shell commands in the worktree, the policy's MCP tools (``mcp__<server>__<tool>``), and
``submit`` whose parameters are the role's reply schema: the structured reply is that tool call. A step
budget bounds the loop; old tool outputs are trimmed when the context grows past a limit.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import anyio

from vibeserve import process
from vibeserve.harness.mcp_client import McpSession, McpStartError, error_message
from vibeserve.harness.pricing import PriceTable
from vibeserve.harness.transcript import Transcript, check_endpoint
from vibeserve.sandbox import Sandbox, SandboxMode
from vibeserve.skills.agent_tools import TOOL_NAMES as SKILL_TOOL_NAMES
from vibeserve.skills.agent_tools import run_skill_tool, skill_tools
from vibeserve.types import AgentCall, AgentResult, ExitReason

SYSTEM = (
    "You are a coding agent working in the directory {workdir}. Use the tools to inspect and change files "
    "and to run commands there; paths are relative to that directory. When the task is done, call `submit` "
    "exactly once with your final reply; nothing else ends the task."
)


def _fn(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


def _obj(**props: dict[str, Any]) -> dict[str, Any]:
    required = [k for k, v in props.items() if not v.pop("optional", False)]
    return {"type": "object", "properties": props, "required": required}


BUILTIN_TOOLS = [
    _fn("read_file", "Read a text file (optionally a line range).",
        _obj(path={"type": "string"}, offset={"type": "integer", "optional": True},
             limit={"type": "integer", "optional": True})),
    _fn("write_file", "Create or overwrite a file.", _obj(path={"type": "string"}, content={"type": "string"})),
    _fn("edit_file", "Replace one exact occurrence of old_string with new_string in a file.",
        _obj(path={"type": "string"}, old_string={"type": "string"}, new_string={"type": "string"})),
    _fn("shell", "Run a bash command in the working directory; returns exit code and output.",
        _obj(command={"type": "string"}, timeout_s={"type": "number", "optional": True})),
]


class ToolError(Exception):
    """A tool call the model got wrong; its message goes back to the model."""


class OpenAIHarness:
    """Options: ``base_url`` (default $OPENAI_BASE_URL or the OpenAI API), ``api_key_env`` (default
    OPENAI_API_KEY), ``max_steps`` (50), ``max_context_chars`` (400k), ``shell_timeout_s`` (600),
    ``output_chars`` (20k per tool result), ``prices`` (a price-table file). Shell commands run in
    ``sandbox``; the file tools run here and refuse paths outside the worktree and its ``.git``."""

    name = "openai"

    def __init__(self, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY", max_steps: int = 50,
                 max_context_chars: int = 400_000, shell_timeout_s: float = 600, output_chars: int = 20_000,
                 prices: str | None = None, sandbox: Sandbox | None = None):
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        self.sandbox = sandbox or Sandbox(SandboxMode.NONE)
        self.api_key_env, self.max_steps = api_key_env, int(max_steps)
        self.max_context_chars, self.shell_timeout_s = int(max_context_chars), float(shell_timeout_s)
        self.output_chars = int(output_chars)
        self.prices = PriceTable.load(Path(prices) if prices else None)

    def check(self) -> None:
        import openai  # noqa: F401 - fail now, not in the first round, if the SDK is missing

        if self.base_url:
            check_endpoint(self.name, self.base_url)

    def run(self, call: AgentCall) -> AgentResult:
        started = time.monotonic()
        with Transcript(call, self.name) as log:
            state = _State()
            try:
                reply = anyio.run(self._loop, call, log, state, started + call.timeout_s)
            except TimeoutError:
                reason, reply, error = ExitReason.TIMEOUT, None, f"the agent ran past its timeout of {call.timeout_s:g} s"
            except (McpStartError, _Exhausted) as e:
                reason, reply, error = ExitReason.ERROR, None, str(e)
            except Exception as e:  # noqa: BLE001 - an endpoint or protocol failure is the call's error
                where = self.base_url or "https://api.openai.com/v1"
                reason, reply, error = ExitReason.ERROR, None, f"the model endpoint {where} failed: {error_message(e)}"
            else:
                reason, error = ExitReason.OK, ""
            wall = time.monotonic() - started
            log.event("end", exit_reason=str(reason), wall_s=wall, error=error)
            cost = self.prices.cost(call.model, state.tokens_in, state.tokens_out, state.tokens_cached)
            return AgentResult(reply=reply, exit_reason=reason, wall_s=wall, tokens_in=state.tokens_in,
                               tokens_out=state.tokens_out, tokens_cached=state.tokens_cached, cost_usd=cost,
                               transcript_path=call.transcript_path, error=error)

    async def _loop(self, call: AgentCall, log: Transcript, state: _State, deadline: float) -> dict[str, Any]:
        from openai import AsyncOpenAI

        logs = call.transcript_path.with_suffix(".logs")
        # Closed inside the event loop: a client left to the garbage collector closes on a dead loop.
        async with AsyncOpenAI(base_url=self.base_url, api_key=os.environ.get(self.api_key_env) or "unset",
                               max_retries=2) as client, McpSession(call.mcp_servers, call.transcript_path.parent, logs) as mcp:
            tools = [*BUILTIN_TOOLS, *skill_tools(call.workdir),
                     *(_fn(f"mcp__{t.server}__{t.name}", t.description, t.input_schema) for t in mcp.tools),
                     _fn("submit", "Submit the final reply; ends the task.", call.reply_schema)]
            messages: list[dict[str, Any]] = [
                {"role": "system", "content": SYSTEM.format(workdir=call.workdir)},
                {"role": "user", "content": call.prompt},
            ]
            for _ in range(self.max_steps):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self._trim(messages)
                with anyio.fail_after(left):
                    resp = await client.chat.completions.create(
                        model=call.model or "default", messages=messages, tools=tools, timeout=left)
                state.add_usage(resp.usage)
                msg = resp.choices[0].message
                if msg.content:
                    log.event("message", text=msg.content)
                messages.append(msg.model_dump(exclude_none=True, include={"role", "content", "tool_calls"}))
                if not msg.tool_calls:
                    messages.append({"role": "user", "content": "Call `submit` with your final reply to finish."})
                    continue
                for tc in msg.tool_calls:
                    name = tc.function.name
                    try:
                        args = json.loads(tc.function.arguments or "{}")
                    except json.JSONDecodeError as e:
                        args, output, is_error = {}, f"arguments are not JSON: {e}", True
                    else:
                        if name == "submit":
                            log.event("tool_call", name=name, arguments=args)
                            log.event("reply", reply=args)
                            return args
                        output, is_error = await self._tool(name, args, call, mcp, deadline)
                    log.event("tool_call", name=name, arguments=args)
                    log.event("tool_result", name=name, output=output, is_error=is_error)
                    messages.append({"role": "tool", "tool_call_id": tc.id, "content": output})
            raise _Exhausted(f"no reply after {self.max_steps} steps (the step budget)")

    async def _tool(self, name: str, args: dict[str, Any], call: AgentCall, mcp: McpSession,
                    deadline: float) -> tuple[str, bool]:
        if name.startswith("mcp__"):
            res = await mcp.call(name.split("__", 2)[-1], args)
            return res.text[: self.output_chars], res.is_error
        if name in SKILL_TOOL_NAMES:  # skills installed in the worktree (.agents/skills)
            output, is_error = run_skill_tool(name, args, call.workdir)
            return output[: self.output_chars], is_error
        try:
            if name == "shell":
                timeout = min(float(args.get("timeout_s") or self.shell_timeout_s), max(deadline - time.monotonic(), 1))
                return await anyio.to_thread.run_sync(self._shell, str(args["command"]), call, timeout), False
            path = self._path(call.workdir, args.get("path"))
            if name == "read_file":
                lines = path.read_text(errors="replace").splitlines(keepends=True)
                start = int(args.get("offset") or 0)
                end = start + int(args["limit"]) if args.get("limit") else len(lines)
                return "".join(lines[start:end])[: self.output_chars], False
            if name in ("write_file", "edit_file") and any(path.is_relative_to(r.resolve()) for r in call.readonly):
                raise ToolError(f"{args.get('path')} is read-only (installed skills are not yours to change)")
            if name == "write_file":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(str(args["content"]))
                return f"wrote {path.relative_to(call.workdir)}", False
            if name == "edit_file":
                text = path.read_text()
                count = text.count(str(args["old_string"]))
                if count != 1:
                    raise ToolError(f"old_string occurs {count} times in {args['path']}; it must occur exactly once")
                path.write_text(text.replace(str(args["old_string"]), str(args["new_string"]), 1))
                return f"edited {path.relative_to(call.workdir)}", False
            raise ToolError(f"unknown tool {name!r}")
        except (ToolError, OSError, KeyError, ValueError) as e:
            return f"error: {e}", True

    @staticmethod
    def _path(workdir: Path, rel: Any) -> Path:
        if not isinstance(rel, str) or not rel:
            raise ToolError("path is required")
        root = workdir.resolve()
        path = (workdir / rel).resolve()
        if not path.is_relative_to(root):
            raise ToolError(f"{rel} is outside the working directory")
        if path != root and path.relative_to(root).parts[0] == ".git":
            raise ToolError(f"{rel} is git's own data; the framework commits your changes")
        return path

    def _shell(self, command: str, call: AgentCall, timeout: float) -> str:
        logs = call.transcript_path.with_suffix(".logs")
        argv = self.sandbox.agent_argv(["bash", "-lc", command], call.workdir, readonly=call.readonly)
        done = process.run(argv, call.workdir, logs, "shell", timeout, env=process.clean_env())
        out = done.stdout_path.read_text(errors="replace") + done.stderr_path.read_text(errors="replace")
        status = "timed out" if done.timed_out else f"exit code {done.returncode}"
        return f"{status}\n{out[-self.output_chars:]}"

    def _trim(self, messages: list[dict[str, Any]]) -> None:
        """Drop the text of the oldest tool results until the context fits; the request and structure stay."""
        size = sum(len(json.dumps(m)) for m in messages)
        for m in messages[2:]:
            if size <= self.max_context_chars:
                return
            if m.get("role") == "tool" and m["content"] != "[trimmed]":
                size -= len(m["content"]) - len("[trimmed]")
                m["content"] = "[trimmed]"


class _Exhausted(Exception):
    pass


class _State:
    def __init__(self) -> None:
        self.tokens_in = self.tokens_out = self.tokens_cached = 0

    def add_usage(self, usage: Any) -> None:
        if usage is None:
            return
        self.tokens_in += usage.prompt_tokens or 0
        self.tokens_out += usage.completion_tokens or 0
        details = getattr(usage, "prompt_tokens_details", None)
        self.tokens_cached += (getattr(details, "cached_tokens", 0) or 0) if details else 0
