"""OpenAI Chat Completions (``POST /v1/chat/completions``), streamed or not, with tool calls.

What any OpenAI-compatible endpoint (hosted, vLLM, llama.cpp) gives the built-in agent. Texts of a turn
are joined by a blank line into one ``content``. A streamed usage chunk (empty ``choices``) is sent only
when the request asks with ``stream_options.include_usage``, as OpenAI does.
"""

from __future__ import annotations

import json
import time
from typing import Any

from vibeserve.testing.fake_llm.script import AssistantMessage, Usage

NAME = "openai-chat"


def offered_tools(body: dict[str, Any]) -> set[str]:
    return {t.get("function", {}).get("name") for t in body.get("tools") or []} - {None}


def is_stream(body: dict[str, Any]) -> bool:
    return bool(body.get("stream"))


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _tool_calls(msg: AssistantMessage, n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id or f"call_fake_{n}_{k}",
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments_json()},
        }
        for k, c in enumerate(msg.tool_calls)
    ]


def _head(body: dict[str, Any], n: int, obj: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-fake-{n}",
        "object": obj,
        "created": int(time.time()),
        "model": body.get("model", "fake-model"),
    }


def _finish(msg: AssistantMessage) -> str:
    return "tool_calls" if msg.tool_calls else "stop"


def complete(msg: AssistantMessage, body: dict[str, Any], n: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(msg.texts) if msg.texts else None}
    if msg.tool_calls:
        message["tool_calls"] = _tool_calls(msg, n)
    choice = {"index": 0, "message": message, "finish_reason": _finish(msg), "logprobs": None}
    return {**_head(body, n, "chat.completion"), "choices": [choice], "usage": _usage(msg.usage)}


def stream(msg: AssistantMessage, body: dict[str, Any], n: int) -> list[str]:
    """Data-only SSE chunks: role, content, one start and one arguments chunk per tool call, finish, [DONE]."""
    head = _head(body, n, "chat.completion.chunk")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    if msg.texts:
        chunks.append(chunk({"content": "\n\n".join(msg.texts)}))
    for k, call in enumerate(_tool_calls(msg, n)):
        start = {
            "index": k,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        chunks.append(chunk({"tool_calls": [start]}))
        chunks.append(
            chunk({"tool_calls": [{"index": k, "function": {"arguments": call["function"]["arguments"]}}]})
        )
    chunks.append(chunk({}, _finish(msg)))
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**head, "choices": [], "usage": _usage(msg.usage)})
    return [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]


def error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "fake_llm_error", "code": str(status), "param": None}}
