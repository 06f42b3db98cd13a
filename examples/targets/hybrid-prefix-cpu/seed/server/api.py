"""The OpenAI-compatible HTTP layer: /health, /v1/models, /v1/completions, /v1/chat/completions."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

from .engine import Engine, Step

DEFAULT_MAX_TOKENS = 16


class BadRequest(Exception):
    pass


def _max_tokens(body: dict) -> int:
    value = body.get("max_tokens")
    if value is None:  # absent or null: OpenAI's newer name, then the default
        value = body.get("max_completion_tokens")
    if value is None:
        value = DEFAULT_MAX_TOKENS
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest("max_tokens must be a positive integer")
    return value


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    for m in messages:
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise BadRequest("each message needs a string role and a string content")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


class Handler(BaseHTTPRequestHandler):
    engine: Engine  # set by make_handler
    model_name: str

    def do_GET(self) -> None:
        if self.path == "/health":
            # The model is loaded before the server listens, so answering at all means ready.
            self._json(200, {"status": "ok"})
        elif self.path == "/v1/models":
            self._json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": self.model_name, "object": "model", "created": 0, "owned_by": "vibeserve"}
                    ],
                },
            )
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        routes = {"/v1/completions": False, "/v1/chat/completions": True}
        if self.path not in routes:
            self._error(404, f"no route {self.path}")
            return
        chat = routes[self.path]
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            if chat:
                prompt_ids = self.engine.encode_chat(_messages(body))
            else:
                if not isinstance(body.get("prompt"), str):
                    raise BadRequest("prompt must be a string")
                prompt_ids = self.engine.encode_completion(body["prompt"])
            if not prompt_ids:
                raise BadRequest("the prompt encodes to no tokens")
            max_tokens = _max_tokens(body)
            if len(prompt_ids) + max_tokens > self.engine.max_context:
                raise BadRequest(
                    f"{len(prompt_ids)} prompt tokens + {max_tokens} max_tokens exceed the context "
                    f"of {self.engine.max_context}"
                )
        except (ValueError, BadRequest) as e:  # json.JSONDecodeError is a ValueError
            self._error(400, str(e))
            return
        # closing() releases the engine's lock even when the client disconnects mid-stream.
        with contextlib.closing(self.engine.generate(prompt_ids, max_tokens)) as steps:
            if body.get("stream"):
                self._stream(steps, chat)
            else:
                self._complete(steps, chat, len(prompt_ids))

    def _complete(self, steps: Iterator[Step], chat: bool, prompt_tokens: int) -> None:
        deltas: list[str] = []
        for step in steps:
            if step.finish_reason:
                break
            deltas.append(step.delta)
        text = "".join(deltas)
        choice = {"index": 0, "finish_reason": step.finish_reason, "logprobs": None}
        choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
        self._json(
            200,
            {
                **self._envelope(chat, chunk=False),
                "choices": [choice],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": step.completion_tokens,
                    "total_tokens": prompt_tokens + step.completion_tokens,
                },
            },
        )

    def _stream(self, steps: Iterator[Step], chat: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        envelope = self._envelope(chat, chunk=True)
        first = True
        try:
            for step in steps:
                if chat:
                    delta = {"content": step.delta}
                    if first:
                        delta = {"role": "assistant", **delta}
                    choice = {"index": 0, "delta": {} if step.finish_reason else delta}
                else:
                    choice = {"index": 0, "text": step.delta, "logprobs": None}
                choice["finish_reason"] = step.finish_reason
                self._event(json.dumps({**envelope, "choices": [choice]}))
                first = False
            self._event("[DONE]")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; the caller closes the generator

    def _event(self, data: str) -> None:
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()

    def _envelope(self, chat: bool, chunk: bool) -> dict:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if chat else "text_completion"
        prefix = "chatcmpl" if chat else "cmpl"
        return {
            "id": f"{prefix}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": self.model_name,
        }

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}})


def make_handler(engine: Engine, model_name: str) -> type[Handler]:
    return type("BoundHandler", (Handler,), {"engine": engine, "model_name": model_name})
