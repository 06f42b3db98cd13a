"""Anthropic Messages (``POST /v1/messages``), streamed the way Claude Code 2.1.328 consumes it.

Claude needs an ``event:`` line on every SSE event, ``message_start`` first, text only through
``text_delta``, tool input through one ``input_json_delta``, and ``content_block_stop`` per block. When a
stream is unusable it retries once with ``stream: false``, so the plain JSON reply is served too.
Anthropic's ``input_tokens`` excludes cache reads: the turn's cached tokens go to ``cache_read_input_tokens``.
"""

from __future__ import annotations

import json
from typing import Any

from vibeserve.testing.fake_llm.script import AssistantMessage, Usage

NAME = "anthropic-messages"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def offered_tools(body: dict[str, Any]) -> set[str]:
    return {t.get("name") for t in body.get("tools") or []} - {None}


def is_stream(body: dict[str, Any]) -> bool:
    return bool(body.get("stream"))


def _usage(usage: Usage, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens - usage.cached_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _input(arguments: dict[str, Any] | str) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments  # sent as scripted, broken on purpose


def _blocks(msg: AssistantMessage, n: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": t} for t in msg.texts]
    blocks += [
        {
            "type": "tool_use",
            "id": c.id or f"toolu_fake_{n}_{k}",
            "name": c.name,
            "input": _input(c.arguments),
        }
        for k, c in enumerate(msg.tool_calls)
    ]
    return blocks


def _message(
    msg: AssistantMessage, body: dict[str, Any], n: int, content: list[dict[str, Any]], output_tokens: int
) -> dict[str, Any]:
    return {
        "id": f"msg_fake_{n}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "fake-claude"),
        "content": content,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(msg.usage, output_tokens),
    }


def _stop_reason(msg: AssistantMessage) -> str:
    return "tool_use" if msg.tool_calls else "end_turn"


def complete(msg: AssistantMessage, body: dict[str, Any], n: int) -> dict[str, Any]:
    return {
        **_message(msg, body, n, _blocks(msg, n), msg.usage.output_tokens),
        "stop_reason": _stop_reason(msg),
    }


def stream(msg: AssistantMessage, body: dict[str, Any], n: int) -> list[str]:
    """``message_start``, start/delta/stop per content block, ``message_delta`` with the stop reason, ``message_stop``."""
    events: list[dict[str, Any]] = [{"type": "message_start", "message": _message(msg, body, n, [], 0)}]
    for k, block in enumerate(_blocks(msg, n)):
        if block["type"] == "text":
            start, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block["text"]}
        else:
            start = {**block, "input": {}}
            raw = block["input"] if isinstance(block["input"], str) else json.dumps(block["input"])
            delta = {"type": "input_json_delta", "partial_json": raw}
        events += [
            {"type": "content_block_start", "index": k, "content_block": start},
            {"type": "content_block_delta", "index": k, "delta": delta},
            {"type": "content_block_stop", "index": k},
        ]
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(msg), "stop_sequence": None},
            "usage": {"output_tokens": msg.usage.output_tokens},
        }
    )
    events.append({"type": "message_stop"})
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events]


def error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}
