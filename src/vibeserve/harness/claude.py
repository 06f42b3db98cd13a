"""The Claude Code harness: ``claude -p --output-format stream-json --verbose`` with ``--json-schema``.

MCP servers come through ``--mcp-config`` with ``--strict-mcp-config``; the allowed tools are listed
(file tools, Bash, and each MCP tool by name), which works as root without bypassing permissions.
Non-essential traffic is off, retries are bounded, and stdin is closed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vibeserve import process
from vibeserve.harness.pricing import PriceTable
from vibeserve.harness.transcript import Transcript, agent_env, check_endpoint, find_binary
from vibeserve.mcp_relay import McpRelay
from vibeserve.netrelay import EndpointRelay
from vibeserve.sandbox import Sandbox, SandboxMode
from vibeserve.types import AgentCall, AgentResult, ExitReason

PACKAGE = "@anthropic-ai/claude-code@2.1.328"
FILE_TOOLS = ("Bash", "Read", "Write", "Edit", "Glob", "Grep")
PROVIDER_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
DEFAULT_ENDPOINT = "https://api.anthropic.com"  # where Claude Code sends requests when no base_url is given


class ClaudeHarness:
    """Options: ``binary``, ``base_url`` (an Anthropic Messages endpoint root, without /v1),
    ``max_retries`` (default 2), ``api_timeout_ms``, ``prices`` (a price-table file). The CLI runs in
    ``sandbox``; its MCP servers run outside it, reached through an ``McpRelay``."""

    name = "claude"

    def __init__(self, binary: str | None = None, base_url: str | None = None, max_retries: int = 2,
                 api_timeout_ms: int = 600_000, prices: str | None = None, sandbox: Sandbox | None = None):
        self.binary_opt, self.base_url = binary, base_url
        self.sandbox = sandbox or Sandbox(SandboxMode.NONE)
        self.max_retries, self.api_timeout_ms = int(max_retries), int(api_timeout_ms)
        self.prices = PriceTable.load(Path(prices) if prices else None)
        self.binary = ""

    def check(self) -> None:
        self.binary = find_binary("claude", self.binary_opt, PACKAGE)
        if self.base_url:
            check_endpoint(self.name, self.base_url)

    def argv(self, call: AgentCall) -> list[str]:
        servers = {s.name: {"type": "stdio", "command": s.command[0], "args": s.command[1:], "env": s.env}
                   for s in call.mcp_servers}
        allowed = [*FILE_TOOLS, *(f"mcp__{s.name}__{t}" for s in call.mcp_servers for t in s.tools)]
        argv = [self.binary or find_binary("claude", self.binary_opt, PACKAGE), "-p", call.prompt,
                "--output-format", "stream-json", "--verbose", "--no-session-persistence",
                "--json-schema", json.dumps(call.reply_schema),
                "--mcp-config", json.dumps({"mcpServers": servers}), "--strict-mcp-config",
                "--allowedTools", ",".join(allowed)]
        if call.model:
            argv += ["--model", call.model]
        return argv

    def run(self, call: AgentCall) -> AgentResult:
        work = call.transcript_path.with_suffix(".claude")
        home = work / "home"
        home.mkdir(parents=True, exist_ok=True)
        extra = {
            "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "CLAUDE_CODE_MAX_RETRIES": str(self.max_retries),
            "API_TIMEOUT_MS": str(self.api_timeout_ms), "ENABLE_TOOL_SEARCH": "false",
        }
        if waits := [s.tool_timeout_s for s in call.mcp_servers if s.tool_timeout_s]:
            extra["MCP_TOOL_TIMEOUT"] = str(int(max(waits) * 1000))  # one bound for all of a call's tools
        started = time.monotonic()
        with Transcript(call, self.name) as log:
            try:
                boxed = self.sandbox.active
                with McpRelay(call.mcp_servers, call.transcript_path.parent, work, enabled=boxed) as relay, \
                        EndpointRelay([self.base_url or DEFAULT_ENDPOINT] if boxed else []) as net:
                    if self.base_url:
                        extra["ANTHROPIC_BASE_URL"] = net.url(self.base_url)
                    relayed = call.model_copy(update={"mcp_servers": relay.servers})
                    argv = self.sandbox.agent_argv(self.argv(relayed), call.workdir, [work, *relay.binds, *net.binds],
                                                   readonly=call.readonly, network=net.prefix)
                    done = process.run(argv, call.workdir, work, "claude", call.timeout_s,
                                       env=agent_env(PROVIDER_VARS, {**extra, **net.env}))
            except process.CommandNotRunnable as e:
                log.event("error", error=str(e))
                return AgentResult(reply=None, exit_reason=ExitReason.ERROR, wall_s=0.0, error=str(e),
                                   transcript_path=call.transcript_path)
            result = self._replay(done.stdout_path, log)
            wall = time.monotonic() - started
            usage = result.get("usage") or {}
            tokens_in = (usage.get("input_tokens", 0) + usage.get("cache_read_input_tokens", 0)
                         + usage.get("cache_creation_input_tokens", 0))
            tokens = {"tokens_in": tokens_in, "tokens_out": usage.get("output_tokens", 0),
                      "tokens_cached": usage.get("cache_read_input_tokens", 0)}
            cost = self.prices.cost(call.model, tokens["tokens_in"], tokens["tokens_out"], tokens["tokens_cached"])
            if cost is None and isinstance(result.get("total_cost_usd"), int | float) and self.base_url is None:
                cost = float(result["total_cost_usd"])  # Claude Code's own figure, for real Anthropic models
            common = {"wall_s": wall, "cost_usd": cost, "transcript_path": call.transcript_path, **tokens}
            if done.timed_out:
                error = f"claude did not finish within {call.timeout_s:g} s; its process group was killed"
                return log.finish(ExitReason.TIMEOUT, error=error, **common)
            if done.returncode != 0 or result.get("is_error"):
                error = f"claude exited with {done.returncode}: {result.get('result') or done.tail(1500).strip()}"
                return log.finish(ExitReason.ERROR, error=error, **common)
            reply = result.get("structured_output")
            if isinstance(reply, dict):
                return log.finish(ExitReason.OK, reply, **common)
            error = f"no structured output; the final result was {str(result.get('result'))[:300]!r}"
            return log.finish(ExitReason.SCHEMA, error=error, **common)

    @staticmethod
    def _replay(stdout: Path, log: Transcript) -> dict[str, Any]:
        """Normalize stream-json events into the transcript; return the final ``result`` event."""
        result: dict[str, Any] = {}
        for line in stdout.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = event.get("type")
            if kind == "assistant":
                for block in (event.get("message") or {}).get("content", []):
                    if block.get("type") == "text":
                        log.event("message", text=block.get("text", ""))
                    elif block.get("type") == "tool_use":
                        log.event("tool_call", name=block.get("name"), arguments=block.get("input"))
            elif kind == "user":
                for block in (event.get("message") or {}).get("content", []):
                    if isinstance(block, dict) and block.get("type") == "tool_result":
                        log.event("tool_result", output=block.get("content"), is_error=bool(block.get("is_error")))
            elif kind == "result":
                result = event
                log.event("usage", **(event.get("usage") or {}))
        return result
