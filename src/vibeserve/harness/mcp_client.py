"""A client session over every MCP server of a call (official SDK, stdio), with tools routed by name."""

from __future__ import annotations

import re
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters, stdio_client

from vibeserve.types import McpServerSpec


def error_message(e: BaseException) -> str:
    """The innermost messages of an exception (task groups wrap the real cause in groups)."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(error_message(x) for x in e.exceptions)
    return f"{type(e).__name__}: {e}"


@dataclass
class McpTool:
    server: str
    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass
class McpResult:
    text: str
    is_error: bool
    structured: Any = None


class McpStartError(Exception):
    """An MCP server of the call did not start."""


class McpSession:
    """``async with McpSession(servers, cwd, log_dir) as s``: ``s.tools`` lists them, ``s.call`` runs one."""

    def __init__(self, servers: list[McpServerSpec], cwd: Path, log_dir: Path):
        self.servers, self.cwd, self.log_dir = servers, cwd, log_dir
        self.tools: list[McpTool] = []
        self._routes: dict[str, Client] = {}
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> McpSession:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        await self._stack.__aenter__()
        try:
            for spec in self.servers:
                try:
                    client = await self._connect(spec)
                    listed = (await client.list_tools()).tools
                except Exception as e:  # noqa: BLE001 - any failure to start is the call's error
                    raise McpStartError(
                        f"MCP server {spec.name!r} ({' '.join(spec.command)}) did not start: {error_message(e)}"
                    ) from None
                for tool in listed:
                    if tool.name in self._routes:
                        continue
                    self._routes[tool.name] = client
                    self.tools.append(McpTool(spec.name, tool.name, tool.description or "", tool.input_schema))
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _connect(self, spec: McpServerSpec) -> Client:
        params = StdioServerParameters(command=spec.command[0], args=spec.command[1:], env=spec.env or None,
                                       cwd=self.cwd)
        # The server's stderr (its logging) goes to a file beside the transcript, not into our terminal.
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", spec.name)
        errlog = self._stack.enter_context(open(self.log_dir / f"mcp-{safe}.stderr", "a"))  # noqa: SIM115
        return await self._stack.enter_async_context(Client(stdio_client(params, errlog=errlog)))

    def server_of(self, tool: str) -> str | None:
        return next((t.server for t in self.tools if t.name == tool), None)

    async def call(self, tool: str, arguments: dict[str, Any]) -> McpResult:
        """Call a tool; an unknown tool or a protocol error comes back as an error result, never raised."""
        client = self._routes.get(tool)
        if client is None:
            return McpResult(f"no MCP server offers tool {tool!r}; tools: {', '.join(sorted(self._routes))}", True)
        try:
            res = await client.call_tool(tool, arguments)
        except Exception as e:  # noqa: BLE001 - a protocol error is something the agent reads
            return McpResult(error_message(e), True)
        text = "\n".join(getattr(c, "text", "") for c in res.content)
        return McpResult(text, bool(res.is_error), res.structured_content)
