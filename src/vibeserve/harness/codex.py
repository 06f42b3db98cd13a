"""The Codex CLI harness: ``codex exec --json`` with ``--output-schema``, MCP servers passed per call.

Codex's own sandbox is off (``--dangerously-bypass-approvals-and-sandbox``) because vibeserve's wraps the
whole call. Stdin is closed (Codex reads an open stdin to EOF), loopback bypasses proxies, analytics and
plugin sync are off, and unbounded reconnects are disabled, so an unreachable server fails fast.
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

PACKAGE = "@openai/codex@0.169.0"
DEFAULT_ENDPOINT = "https://api.openai.com/v1"  # where Codex sends requests when no base_url is given


def _toml(value: Any) -> str:
    """A ``-c key=value`` value: JSON strings, arrays and numbers are valid TOML; tables are inline."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


class CodexHarness:
    """Options: ``binary``, ``base_url`` (an OpenAI Responses endpoint; default: Codex's own provider),
    ``env_key`` (the variable holding its key, default OPENAI_API_KEY), ``catalog`` (a model catalog
    JSON), ``prices`` (a price-table file). The CLI runs in ``sandbox``; its MCP servers run outside it,
    reached through an ``McpRelay``."""

    name = "codex"

    def __init__(self, binary: str | None = None, base_url: str | None = None, env_key: str = "OPENAI_API_KEY",
                 catalog: str | None = None, prices: str | None = None, sandbox: Sandbox | None = None):
        self.binary_opt, self.base_url, self.env_key, self.catalog = binary, base_url, env_key, catalog
        self.sandbox = sandbox or Sandbox(SandboxMode.NONE)
        self.prices = PriceTable.load(Path(prices) if prices else None)
        self.binary = ""

    def check(self) -> None:
        self.binary = find_binary("codex", self.binary_opt, PACKAGE)
        if self.base_url:
            check_endpoint(self.name, self.base_url)

    def argv(self, call: AgentCall, schema: Path, last: Path, base_url: str | None = None) -> list[str]:
        argv = [self.binary or find_binary("codex", self.binary_opt, PACKAGE), "exec",
                "--dangerously-bypass-approvals-and-sandbox", "--ephemeral", "--json",
                "--disable", "unbounded_connection_retries",
                "--output-schema", str(schema), "-o", str(last),
                "-c", "analytics.enabled=false", "-c", "features.plugins=false"]
        if call.model:
            argv += ["-m", call.model]
        if self.base_url:
            provider = {"name": "vibeserve", "base_url": base_url or self.base_url, "wire_api": "responses",
                        "env_key": self.env_key, "request_max_retries": 0, "stream_max_retries": 0}
            argv += ["-c", "model_provider=vibeserve", "-c", f"model_providers.vibeserve={_toml(provider)}"]
        if self.catalog:
            argv += ["-c", f"model_catalog_json={json.dumps(self.catalog)}"]
        for server in call.mcp_servers:
            key = f"mcp_servers.{server.name}"
            argv += ["-c", f"{key}.command={json.dumps(server.command[0])}",
                     "-c", f"{key}.args={_toml(server.command[1:])}",
                     "-c", f"{key}.required=true"]
            if server.env:
                argv += ["-c", f"{key}.env={_toml(server.env)}"]
            if server.tool_timeout_s:  # codex gives a tool 60 s by default; a profile takes longer
                argv += ["-c", f"{key}.tool_timeout_sec={server.tool_timeout_s:g}"]
        return [*argv, call.prompt]

    def run(self, call: AgentCall) -> AgentResult:
        home = call.transcript_path.parent / "codex-home"
        home.mkdir(parents=True, exist_ok=True)
        work = call.transcript_path.with_suffix(".codex")
        work.mkdir(parents=True, exist_ok=True)
        schema, last = work / "schema.json", work / "last.txt"
        schema.write_text(json.dumps(call.reply_schema))
        last.unlink(missing_ok=True)
        env = agent_env((self.env_key,), {"CODEX_HOME": str(home), "HOME": str(home)})
        started = time.monotonic()
        with Transcript(call, self.name) as log:
            try:
                boxed = self.sandbox.active
                with McpRelay(call.mcp_servers, call.transcript_path.parent, work, enabled=boxed) as relay, \
                        EndpointRelay([self.base_url or DEFAULT_ENDPOINT] if boxed else []) as net:
                    relayed = call.model_copy(update={"mcp_servers": relay.servers})
                    inner = self.argv(relayed, schema, last, net.url(self.base_url) if self.base_url else None)
                    argv = self.sandbox.agent_argv(inner, call.workdir, [home, work, *relay.binds, *net.binds],
                                                   readonly=call.readonly, network=net.prefix)
                    done = process.run(argv, call.workdir, work, "codex", call.timeout_s, env={**env, **net.env})
            except process.CommandNotRunnable as e:
                log.event("error", error=str(e))
                return AgentResult(reply=None, exit_reason=ExitReason.ERROR, wall_s=0.0, error=str(e),
                                   transcript_path=call.transcript_path)
            usage = self._replay(done.stdout_path, log)
            wall = time.monotonic() - started
            tokens = {"tokens_in": usage.get("input_tokens", 0), "tokens_out": usage.get("output_tokens", 0),
                      "tokens_cached": usage.get("cached_input_tokens", 0)}
            cost = self.prices.cost(call.model, tokens["tokens_in"], tokens["tokens_out"], tokens["tokens_cached"])
            common = {"wall_s": wall, "cost_usd": cost, "transcript_path": call.transcript_path, **tokens}
            if done.timed_out:
                error = f"codex did not finish within {call.timeout_s:g} s; its process group was killed"
                return log.finish(ExitReason.TIMEOUT, error=error, **common)
            if done.returncode != 0:
                error = f"codex exited with {done.returncode}: {done.tail(1500).strip()}"
                return log.finish(ExitReason.ERROR, error=error, **common)
            reply, error = _parse_reply(last)
            return log.finish(ExitReason.OK if reply is not None else ExitReason.SCHEMA, reply, error, **common)

    @staticmethod
    def _replay(stdout: Path, log: Transcript) -> dict[str, int]:
        """Turn Codex's JSONL events into normalized transcript events; return the summed usage."""
        usage: dict[str, int] = {}
        for line in stdout.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind, item = event.get("type"), event.get("item") or {}
            if kind == "item.completed":
                itype = item.get("type")
                if itype == "agent_message":
                    log.event("message", text=item.get("text", ""))
                elif itype == "command_execution":
                    log.event("tool_call", name="shell", arguments={"command": item.get("command")})
                    log.event("tool_result", name="shell", output=item.get("aggregated_output", ""),
                              is_error=item.get("exit_code") not in (0, None))
                elif itype == "file_change":
                    log.event("tool_call", name="apply_patch", arguments={"changes": item.get("changes", [])})
                elif itype == "mcp_tool_call":
                    log.event("tool_call", name=f"mcp__{item.get('server')}__{item.get('tool')}",
                              arguments=item.get("arguments"))
                    log.event("tool_result", name=item.get("tool"), output=item.get("result"),
                              is_error=bool(item.get("error")))
                elif itype == "error":
                    log.event("message", text=item.get("message", ""), level="warning")
            elif kind == "turn.completed":
                for k, v in (event.get("usage") or {}).items():
                    if isinstance(v, int):
                        usage[k] = usage.get(k, 0) + v
                log.event("usage", **(event.get("usage") or {}))
            elif kind in ("turn.failed", "error"):
                log.event("error", error=event.get("error") or event.get("message"))
        return usage


def _parse_reply(last: Path) -> tuple[dict[str, Any] | None, str]:
    """Codex does not enforce ``--output-schema``: the last message must be a JSON object to count."""
    if not last.is_file():
        return None, "codex wrote no final message"
    text = last.read_text().strip()
    try:
        reply = json.loads(text)
    except json.JSONDecodeError:
        return None, f"the final message is not JSON: {text[:300]!r}"
    if not isinstance(reply, dict):
        return None, "the final message is not a JSON object"
    return reply, ""
