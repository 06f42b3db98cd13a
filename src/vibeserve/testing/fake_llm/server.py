"""The fake model server: a Starlette app over a ``TurnQueue``, and ``FakeLLM``, which runs it in a thread.

Every request is recorded. A model request takes the next fitting turn (see ``script``), waits out the
turn's ``delay_s``, then answers with its ``status`` error, hangs, or renders the assistant message in the
request's protocol. Hangs and delays poll a close flag, so ``FakeLLM.close()`` releases them (HTTP 503,
or the end of a stalled stream) and the server always shuts down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from vibeserve.testing.fake_llm import anthropic_messages, openai_chat, openai_responses
from vibeserve.testing.fake_llm.script import Script, Turn, TurnQueue, conversation_text

logger = logging.getLogger(__name__)

_POLL_S = 0.05


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    index: int  # 1-based, in order of arrival
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lowercased
    body: Any  # the parsed JSON; the raw text when it is not JSON; None when empty
    protocol: str | None = None  # "openai-responses", "openai-chat", "anthropic-messages", or None
    turn: int | None = None  # index of the script turn that answered it
    status: int | None = None  # the HTTP status of the answer

    @property
    def text(self) -> str:
        """The conversation text that ``Turn.match`` is checked against."""
        return conversation_text(self.body)


class FakeLLMApp:
    """The request handling, independent of how it is served."""

    def __init__(self, script: Script) -> None:
        self.queue = TurnQueue(script)
        self.closing = threading.Event()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        wires = [
            ("/v1/responses", openai_responses),
            ("/v1/chat/completions", openai_chat),
            ("/v1/messages", anthropic_messages),
        ]
        routes = [Route(path, self._model_endpoint(wire), methods=["POST"]) for path, wire in wires]
        routes += [
            Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/api/hello", self._hello, methods=["GET", "HEAD"]),
            Route("/{rest:path}", self._not_found, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
        ]
        self.app = Starlette(routes=routes)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    async def _record(self, request: Request, protocol: str | None = None) -> RecordedRequest:
        raw = (await request.body()).decode("utf-8", "replace")
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        with self._lock:
            rec = RecordedRequest(
                index=len(self._requests) + 1,
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                protocol=protocol,
            )
            self._requests.append(rec)
        return rec

    def _answer(self, rec: RecordedRequest, response: Response) -> Response:
        rec.status = response.status_code
        logger.info("#%d %s %s -> turn %s, HTTP %d", rec.index, rec.method, rec.path, rec.turn, rec.status)
        return response

    async def _wait(self, seconds: float | None) -> bool:
        """Sleep ``seconds`` (None: forever) unless the server closes first; True when it closed."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self.closing.is_set():
            left = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            if left <= 0:
                return False
            await asyncio.sleep(left)
        return True

    def _model_endpoint(self, wire: ModuleType):
        async def endpoint(request: Request) -> Response:
            rec = await self._record(request, wire.NAME)
            if not isinstance(rec.body, dict):
                return self._answer(
                    rec, JSONResponse(wire.error(400, "fake_llm: the body is not a JSON object"), 400)
                )
            taken = self.queue.take(rec.text)
            if taken is None:
                message = self.queue.exhausted_message(rec.index, rec.method, rec.path)
                logger.warning(message)
                status = self.queue.script.exhausted_status
                return self._answer(rec, JSONResponse(wire.error(status, message), status))
            rec.turn, turn = taken
            return await self._serve_turn(rec, turn, wire)

        return endpoint

    async def _serve_turn(self, rec: RecordedRequest, turn: Turn, wire: ModuleType) -> Response:
        closed_msg = (
            f"fake_llm is shutting down; request #{rec.index} was held by turn {rec.turn} (delay or hang)"
        )
        if turn.delay_s and await self._wait(turn.delay_s):
            return self._answer(rec, JSONResponse(wire.error(503, closed_msg), 503))
        if turn.hang is True:
            await self._wait(None)
            return self._answer(rec, JSONResponse(wire.error(503, closed_msg), 503))
        if turn.status is not None:
            message = f"fake_llm: turn {rec.turn} is scripted to fail with HTTP {turn.status}"
            return self._answer(rec, JSONResponse(wire.error(turn.status, message), turn.status))
        msg = self.queue.script.assistant_message(turn, wire.offered_tools(rec.body))
        if not wire.is_stream(rec.body):
            return self._answer(rec, JSONResponse(wire.complete(msg, rec.body, rec.index)))
        chunks: list[str] = wire.stream(msg, rec.body, rec.index)
        hang_mid_stream = turn.hang == "mid_stream"

        async def body() -> AsyncIterator[str]:
            yield chunks[0]
            if hang_mid_stream:
                await self._wait(None)
                return  # the stream ends unfinished, as a dropped connection would
            for chunk in chunks[1:]:
                yield chunk

        headers = {"cache-control": "no-cache"}
        return self._answer(rec, StreamingResponse(body(), media_type="text/event-stream", headers=headers))

    async def _count_tokens(self, request: Request) -> Response:
        # Claude Code was not seen calling it in -p mode; an estimate, not a turn.
        rec = await self._record(request, anthropic_messages.NAME)
        return self._answer(rec, JSONResponse({"input_tokens": len(rec.text) // 4}))

    async def _models(self, request: Request) -> Response:
        rec = await self._record(request)
        models = [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake_llm"}]
        return self._answer(rec, JSONResponse({"object": "list", "data": models}))

    async def _hello(self, request: Request) -> Response:
        # Claude Code sends HEAD /api/hello unless CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1.
        rec = await self._record(request)
        return self._answer(rec, JSONResponse({}))

    async def _not_found(self, request: Request) -> Response:
        rec = await self._record(request)
        return self._answer(
            rec, JSONResponse({"error": {"message": f"fake_llm: no endpoint {rec.method} {rec.path}"}}, 404)
        )


def _as_script(script: Script | list[Turn] | str | Path) -> Script:
    if isinstance(script, Script):
        return script
    if isinstance(script, list):
        return Script(turns=script)
    return Script.load(script)


class FakeLLM:
    """Runs the fake model server on ``host`` (a free port unless ``port`` is given) in a background thread.

    Use as a context manager, or ``start()`` then ``close()``. Codex takes ``openai_base_url``
    (``<url>/v1``); Claude Code takes ``anthropic_base_url`` (``<url>``, no ``/v1``).
    """

    def __init__(
        self, script: Script | list[Turn] | str | Path, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._app = FakeLLMApp(_as_script(script))
        self._host, self._port = host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> FakeLLM:
        """Start serving; returns once the port is bound."""
        config = uvicorn.Config(
            self._app.app, host=self._host, port=self._port, log_level="warning", access_log=False,
            lifespan="off", ws="none", timeout_graceful_shutdown=2,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-llm", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"fake_llm could not start on {self._host}:{self._port}")
            time.sleep(0.01)
        self._port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:PORT``."""
        if self._server is None or not self._server.started:
            raise RuntimeError("fake_llm is not running; call start() or use it as a context manager")
        return f"http://{self._host}:{self._port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order of arrival."""
        return self._app.requests

    @property
    def model_requests(self) -> list[RecordedRequest]:
        """The requests to a model endpoint (those that take turns), in order."""
        return [r for r in self._app.requests if r.protocol and not r.path.endswith("/count_tokens")]

    @property
    def pending(self) -> list[int]:
        """Indexes of the script turns not consumed yet."""
        return self._app.queue.pending()

    def close(self) -> None:
        """Release held requests and stop the server; safe to call twice."""
        self._app.closing.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
