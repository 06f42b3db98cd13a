"""OpenAI Responses (``POST /v1/responses``), streamed the way Codex CLI 0.169.0 consumes it.

Codex always streams, dispatches on each event's ``type``, needs ``response.output_item.added`` before
any delta and ``response.output_item.done`` with the complete item, and ends a turn only on
``response.completed``; items found only in ``response.completed.response.output`` are ignored.
"""

from __future__ import annotations

import json
import time
from typing import Any

from vibeserve.testing.fake_llm.script import AssistantMessage, ToolCall, Usage

NAME = "openai-responses"


def offered_tools(body: dict[str, Any]) -> set[str]:
    """Tool names the request offers; a Codex namespace's tools count as ``<namespace>__<tool>``."""
    names: set[str] = set()
    for tool in body.get("tools") or []:
        if tool.get("type") == "namespace":
            names.update(f"{tool.get('name')}__{sub.get('name')}" for sub in tool.get("tools") or [])
        elif tool.get("name"):
            names.add(tool["name"])
    return names


def is_stream(body: dict[str, Any]) -> bool:
    return bool(body.get("stream"))


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _namespaced(call: ToolCall, body: dict[str, Any]) -> tuple[str | None, str]:
    """Codex calls an MCP tool as ``namespace="mcp__server"`` + ``name="tool"``; a bare name is refused."""
    if call.namespace:
        return call.namespace, call.name
    for tool in body.get("tools") or []:
        if tool.get("type") != "namespace":
            continue
        prefix = f"{tool.get('name')}__"
        subs = {sub.get("name") for sub in tool.get("tools") or []}
        if call.name.startswith(prefix) and call.name[len(prefix) :] in subs:
            return tool["name"], call.name[len(prefix) :]
    if call.name.startswith("mcp__") and call.name.count("__") >= 2:
        namespace, _, name = call.name.rpartition("__")
        return namespace, name
    return None, call.name


def _items(msg: AssistantMessage, body: dict[str, Any], n: int) -> list[dict[str, Any]]:
    custom = {t.get("name") for t in body.get("tools") or [] if t.get("type") == "custom"}
    items: list[dict[str, Any]] = []
    for k, text in enumerate(msg.texts):
        content = [{"type": "output_text", "text": text, "annotations": []}]
        items.append(
            {
                "id": f"msg_fake_{n}_{k}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": content,
            }
        )
    for k, call in enumerate(msg.tool_calls):
        call_id = call.id or f"call_fake_{n}_{k}"
        if call.name in custom or (isinstance(call.arguments, str) and call.name not in offered_tools(body)):
            items.append(
                {
                    "id": f"ctc_fake_{n}_{k}",
                    "type": "custom_tool_call",
                    "call_id": call_id,
                    "name": call.name,
                    "input": call.arguments_json(),
                    "status": "completed",
                }
            )
            continue
        namespace, name = _namespaced(call, body)
        item = {
            "id": f"fc_fake_{n}_{k}",
            "type": "function_call",
            "call_id": call_id,
            "name": name,
            "arguments": call.arguments_json(),
            "status": "completed",
        }
        if namespace:
            item["namespace"] = namespace
        items.append(item)
    return items


def _response(
    body: dict[str, Any], n: int, status: str, output: list[dict[str, Any]], usage: Usage | None
) -> dict[str, Any]:
    return {
        "id": f"resp_fake_{n}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": body.get("model", "fake-model"),
        "output": output,
        "parallel_tool_calls": bool(body.get("parallel_tool_calls", True)),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "usage": _usage(usage) if usage else None,
    }


def complete(msg: AssistantMessage, body: dict[str, Any], n: int) -> dict[str, Any]:
    """A non-streamed Responses object (Codex never asks for one; SDK clients may)."""
    return _response(body, n, "completed", _items(msg, body, n), msg.usage)


def _item_events(item: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """The events of one output item: added (empty), its deltas, done (complete)."""
    if item["type"] == "message":
        text = item["content"][0]["text"]
        part, empty = item["content"][0], {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": item["id"], "output_index": k, "content_index": 0}
        return [
            {
                "type": "response.output_item.added",
                "output_index": k,
                "item": {**item, "status": "in_progress", "content": []},
            },
            {"type": "response.content_part.added", **where, "part": empty},
            {"type": "response.output_text.delta", **where, "delta": text, "logprobs": []},
            {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **where, "part": part},
            {"type": "response.output_item.done", "output_index": k, "item": item},
        ]
    if item["type"] == "function_call":
        where = {"item_id": item["id"], "output_index": k}
        return [
            {
                "type": "response.output_item.added",
                "output_index": k,
                "item": {**item, "status": "in_progress", "arguments": ""},
            },
            {"type": "response.function_call_arguments.delta", **where, "delta": item["arguments"]},
            {
                "type": "response.function_call_arguments.done",
                **where,
                "name": item["name"],
                "arguments": item["arguments"],
            },
            {"type": "response.output_item.done", "output_index": k, "item": item},
        ]
    return [
        {
            "type": "response.output_item.added",
            "output_index": k,
            "item": {**item, "status": "in_progress", "input": ""},
        },
        {"type": "response.output_item.done", "output_index": k, "item": item},
    ]


def stream(msg: AssistantMessage, body: dict[str, Any], n: int) -> list[str]:
    """The SSE chunks of one streamed turn, ``response.created`` first and ``response.completed`` last."""
    items = _items(msg, body, n)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response(body, n, "in_progress", [], None)},
        {"type": "response.in_progress", "response": _response(body, n, "in_progress", [], None)},
    ]
    for k, item in enumerate(items):
        events += _item_events(item, k)
    events.append(
        {"type": "response.completed", "response": _response(body, n, "completed", items, msg.usage)}
    )
    return [
        f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': i})}\n\n"
        for i, e in enumerate(events)
    ]


def error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "fake_llm_error", "code": str(status), "param": None}}
