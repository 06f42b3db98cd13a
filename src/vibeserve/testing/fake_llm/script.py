"""The turn script a fake model replays: an ordered list of assistant turns, optionally keyed by a marker.

Each model request takes one turn: the first unconsumed turn whose ``match`` occurs in the request's
conversation text, else the first unconsumed turn without a ``match``. When none is left the server
answers HTTP 500 saying so; it never makes content up.
"""

from __future__ import annotations

import json
import threading
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# An object no role schema accepts: required keys missing, an unknown key present.
MALFORMED_REPLY: dict[str, Any] = {"fake_llm": "malformed reply: this object fails the schema on purpose"}
# The tool Claude Code adds for ``--json-schema``; a reply goes to it when the request offers it.
CLAUDE_REPLY_TOOL = "StructuredOutput"
# Keys whose string values are structure, not conversation; left out of the text that ``match`` searches.
_STRUCTURAL_KEYS = {"type", "role", "id", "call_id", "tool_use_id", "signature", "cache_control"}
_CONVERSATION_KEYS = ("instructions", "system", "input", "messages")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Usage(_Model):
    """Token counts reported for a turn. ``input_tokens`` includes ``cached_tokens`` (OpenAI's convention)."""

    input_tokens: int = Field(0, ge=0)
    output_tokens: int = Field(0, ge=0)
    cached_tokens: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _cached_within_input(self) -> Usage:
        if self.cached_tokens > self.input_tokens:
            raise ValueError("cached_tokens is part of input_tokens and cannot exceed it")
        return self


class ToolCall(_Model):
    """One tool call in an assistant turn, named as the client's request names the tool.

    ``arguments`` is a JSON object, or a string sent as is (a freeform tool's input such as Codex's
    ``apply_patch``, or deliberately broken JSON). MCP tools may be written ``mcp__<server>__<tool>`` for
    every protocol: for Codex the Responses adapter turns that into ``namespace="mcp__<server>"`` +
    ``name="<tool>"``. ``namespace`` sets the Codex namespace explicitly.
    """

    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    id: str | None = None
    namespace: str | None = None

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


class Turn(_Model):
    """One assistant message and how to deliver it."""

    match: str | None = None  # take this turn only for a request whose conversation contains this text
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    reply: dict[str, Any] | None = None  # the final structured reply
    malformed: bool = False  # send MALFORMED_REPLY as the structured reply
    delay_s: float = Field(0.0, ge=0)  # wait before answering
    # True: never send headers; "mid_stream": send the first event, then stall
    hang: bool | Literal["mid_stream"] = False
    status: int | None = Field(None, ge=400, le=599)  # answer with this HTTP error instead
    usage: Usage = Field(default_factory=Usage)

    @model_validator(mode="after")
    def _consistent(self) -> Turn:
        if self.reply is not None and self.malformed:
            raise ValueError("give either reply or malformed, not both")
        if (self.reply is not None or self.malformed) and self.tool_calls:
            raise ValueError("a turn with a structured reply ends the agent; it cannot also call tools")
        if self.hang and self.status is not None:
            raise ValueError("give either hang or status, not both")
        return self


class Script(_Model):
    """A whole script. ``reply_tool`` names the built-in agent's reply tool (see ``assistant_message``)."""

    version: Literal[1] = 1
    reply_tool: str | None = None
    # Codex hides the body of a 500 ("experiencing high demand"); 502 shows it, if a test needs to read it.
    exhausted_status: int = Field(500, ge=400, le=599)
    turns: list[Turn] = Field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> Script:
        """Read a script from a ``.toml`` file or, for any other suffix, a JSON file."""
        path = Path(path)
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return cls.model_validate(data)

    def assistant_message(self, turn: Turn, offered_tools: set[str]) -> AssistantMessage:
        """Resolve a turn into texts and tool calls for a request that offers ``offered_tools``.

        A structured reply becomes a call to the reply tool (``reply_tool``, then Claude's
        ``StructuredOutput``) when the request offers one, else the final assistant text as JSON, which
        is how Codex's ``--output-schema`` replies arrive.
        """
        texts = [turn.text] if turn.text else []
        calls = list(turn.tool_calls)
        reply = MALFORMED_REPLY if turn.malformed else turn.reply
        if reply is not None:
            tool = next((t for t in (self.reply_tool, CLAUDE_REPLY_TOOL) if t and t in offered_tools), None)
            if tool:
                calls.append(ToolCall(name=tool, arguments=reply))
            else:
                texts.append(json.dumps(reply))
        return AssistantMessage(texts=texts, tool_calls=calls, usage=turn.usage)


class AssistantMessage(_Model):
    """What a protocol adapter renders: message texts, then tool calls."""

    texts: list[str]
    tool_calls: list[ToolCall]
    usage: Usage


def conversation_text(body: Any) -> str:
    """Every string of a request's system prompt and messages, joined: what ``Turn.match`` searches."""
    parts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key not in _STRUCTURAL_KEYS:
                    walk(value)

    if isinstance(body, dict):
        for key in _CONVERSATION_KEYS:
            walk(body.get(key))
    return "\n".join(parts)


class TurnQueue:
    """Hands out a script's turns to requests, each turn once; safe to share between threads."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self._used = [False] * len(script.turns)
        self._lock = threading.Lock()

    def take(self, text: str) -> tuple[int, Turn] | None:
        """The index and turn for a request whose conversation is ``text``, or None when none fits."""
        with self._lock:
            free = [(i, t) for i, t in enumerate(self.script.turns) if not self._used[i]]
            pick = next(((i, t) for i, t in free if t.match is not None and t.match in text), None)
            pick = pick or next(((i, t) for i, t in free if t.match is None), None)
            if pick is not None:
                self._used[pick[0]] = True
            return pick

    def pending(self) -> list[int]:
        """Indexes of the turns not taken yet."""
        with self._lock:
            return [i for i, used in enumerate(self._used) if not used]

    def exhausted_message(self, request_no: int, method: str, path: str) -> str:
        left = [self.script.turns[i].match for i in self.pending()]
        why = (
            f"its {len(left)} unconsumed turn(s) are keyed to {sorted(set(map(str, left)))!r}, none found in the request"
            if left
            else f"all {len(self.script.turns)} turn(s) are consumed"
        )
        return f"fake_llm script exhausted: request #{request_no} ({method} {path}) got no turn: {why}"
