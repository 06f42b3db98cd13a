"""The open-loop runner: send each request at its scheduled time, stream it, time every text chunk."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from vibeserve.bench.metrics import BenchReport, summarize, write_responses
from vibeserve.bench.workload import (
    BenchConfig,
    BenchError,
    RequestSpec,
    arrival_times,
    build_requests,
    load_token_counter,
)

PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
PREFLIGHT_TIMEOUT_S = 10.0
SPIN_S = 0.0015  # the last stretch before a due time is yielded away instead of slept


@dataclass
class RequestResult:
    """What one request did; times are `time.perf_counter()` seconds, `error` is a reason key."""

    index: int
    scheduled: float  # absolute due time
    sent: float | None = None  # when the client started sending (send lag counts to here)
    written: float | None = None  # when the request's last byte was written (latencies count from here)
    first_text: float | None = None
    end: float | None = None
    chunk_times: list[float] = field(default_factory=list)  # arrival of each text-carrying chunk
    text: str = ""
    error: str | None = None
    detail: str = ""
    output_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and self.sent is not None

    def fail(self, reason: str, detail: str = "") -> None:
        if self.error is None:
            self.error, self.detail = reason, detail[:300]


class _Failed(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def base_url(url: str) -> str:
    """`http://host:port` from what users type (a trailing `/` or `/v1` is dropped)."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def request_body(spec: RequestSpec, config: BenchConfig, model: str) -> dict:
    body: dict = {**spec.extra, "model": model, "max_tokens": spec.max_tokens, "temperature": 0,
                  "stream": config.stream}
    if spec.prompt is not None:
        body["prompt"] = spec.prompt
    else:
        body["messages"] = spec.messages
    if config.ignore_eos:
        body["ignore_eos"] = True
    return body


def chunk_text(obj: object, endpoint: str, stream: bool) -> str:
    """The text a completion chunk (or whole response) carries; a role-only delta carries none."""
    if not isinstance(obj, dict):
        raise _Failed("malformed_sse" if stream else "bad_response", f"not a JSON object: {obj!r}")
    if "error" in obj:
        raise _Failed("server_error", json.dumps(obj["error"]))
    choices = obj.get("choices")
    if not isinstance(choices, list):
        raise _Failed("malformed_sse" if stream else "bad_response", "no choices list")
    if not choices:  # e.g. the final usage-only chunk
        return ""
    choice = choices[0] if isinstance(choices[0], dict) else {}
    if endpoint == "completions":
        text = choice.get("text")
    else:
        text = (choice.get("delta") if stream else choice.get("message")) or {}
        text = text.get("content") if isinstance(text, dict) else None
    if text is not None and not isinstance(text, str):
        raise _Failed("malformed_sse" if stream else "bad_response", f"text is {text!r}")
    return text or ""


def _finished(obj: dict) -> bool:
    choices = obj.get("choices")
    return bool(choices) and isinstance(choices[0], dict) and choices[0].get("finish_reason") is not None


async def _read_stream(response: httpx.Response, result: RequestResult, endpoint: str) -> None:
    # Reads on after [DONE] to the body's end, so the connection goes back to the pool (a response
    # closed early closes its connection, and the next request would pay for a new one).
    finished_at: float | None = None
    async for line in response.aiter_lines():
        now = time.perf_counter()
        if result.end is not None or not line.startswith("data:"):
            continue  # after [DONE]; blank separators, comments, event:/id: fields
        data = line[5:].strip()
        if data == "[DONE]":
            result.end = now
            continue
        try:
            obj = json.loads(data)
        except ValueError:
            raise _Failed("malformed_sse", data) from None
        text = chunk_text(obj, endpoint, stream=True)
        if text:
            result.chunk_times.append(now)
            result.text += text
        if _finished(obj):
            finished_at = now
    if result.end is None:
        # Some servers (transformers serve) close cleanly after the chunk with finish_reason and send no
        # [DONE]: that stream is complete. Without either, it was cut short.
        if finished_at is None:
            raise _Failed("missing_done", "the stream ended without data: [DONE] or a finish_reason")
        result.end = finished_at


async def send_request(
    client: httpx.AsyncClient,
    request: httpx.Request,
    result: RequestResult,
    *,
    endpoint: str,
    stream: bool,
    timeout: float,
) -> None:
    """Send one pre-built request and fill `result`; every failure becomes a reason, never an exception."""

    async def on_trace(event: str, info: dict) -> None:
        # Latencies start once the request is on the wire: the client's own work to encode and write it
        # (about 0.5 ms in httpx) is not the server's time to first token.
        if event == "http11.send_request_body.complete":
            result.written = time.perf_counter()

    request.extensions["trace"] = on_trace
    result.sent = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            response = await client.send(request, stream=stream)
            try:
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")
                    raise _Failed(f"http_{response.status_code}", detail)
                if stream:
                    await _read_stream(response, result, endpoint)
                else:
                    result.end = time.perf_counter()
                    try:
                        obj = response.json()
                    except ValueError:
                        raise _Failed("bad_response", response.text) from None
                    result.text = chunk_text(obj, endpoint, stream=False)
                    result.chunk_times = [result.end] if result.text else []
            finally:
                await response.aclose()
        if not result.text:
            raise _Failed("no_text", "the response carried no text")
        result.first_text = result.chunk_times[0]
    except _Failed as e:
        result.fail(e.reason, e.detail)
    except (TimeoutError, httpx.TimeoutException):
        result.fail("timeout", f"no complete answer within {timeout} s")
    except httpx.ConnectError as e:
        result.fail("connect_error", str(e))
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
        result.fail("connection_closed", f"{type(e).__name__}: {e}")
    except httpx.HTTPError as e:
        result.fail("http_error", f"{type(e).__name__}: {e}")


async def preflight(client: httpx.AsyncClient, url: str, model: str | None) -> str:
    """GET /v1/models: an unreachable server is a `BenchError`; returns the model name to send."""
    try:
        response = await client.get(url + "/v1/models", timeout=PREFLIGHT_TIMEOUT_S)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
        raise BenchError(f"cannot reach the server at {url}: {e}") from None
    except httpx.HTTPError:
        return model or "default"  # it accepted a connection; slow answers become per-request failures
    if model:
        return model
    try:
        return str(response.json()["data"][0]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        return "default"


async def _sleep_until(due: float) -> None:
    """Sleep until `due` (perf_counter): the loop's timers overshoot by up to 1 ms (epoll rounds
    timeouts up to whole ms), so the last stretch yields in a loop, still serving other requests."""
    delay = due - time.perf_counter() - SPIN_S
    if delay > 0:
        await asyncio.sleep(delay)
    while time.perf_counter() < due:
        await asyncio.sleep(0)


async def run_benchmark_async(
    config: BenchConfig, on_result: Callable[[RequestResult], None] | None = None
) -> BenchReport:
    """Run one open-loop benchmark and summarize it; `on_result` sees each request as it finishes."""
    counter = load_token_counter(config.tokenizer)
    specs = build_requests(config, counter)
    offsets = arrival_times(len(specs), config.rate, config.arrival, config.seed)
    url = base_url(config.url)
    pool = config.max_concurrency or len(specs)
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    # httpx's own timeout is only a backstop: asyncio.timeout bounds the whole request, stream included.
    async with httpx.AsyncClient(limits=limits, timeout=config.request_timeout + 5) as client:
        model = await preflight(client, url, config.model)
        slots = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
        # Built before the clock starts, so encoding a request is not part of its TTFT or send lag.
        accept = {"accept": "text/event-stream" if config.stream else "application/json"}
        requests = [
            client.build_request("POST", url + PATHS[config.endpoint], json=request_body(s, config, model), headers=accept)
            for s in specs
        ]
        how = {"endpoint": config.endpoint, "stream": config.stream, "timeout": config.request_timeout}

        async def one(i: int, result: RequestResult) -> None:
            try:
                if slots is None:
                    await send_request(client, requests[i], result, **how)
                else:
                    async with slots:
                        await send_request(client, requests[i], result, **how)
            except Exception as e:  # a bug here must not take the other requests down
                result.fail("client_error", f"{type(e).__name__}: {e}")
            if on_result is not None:
                on_result(result)

        # A full collection over the setup's objects (tokenizer, pydantic, httpx) stalls the loop for tens
        # of ms mid-run; frozen objects are never scanned again, so collections stay short.
        gc.collect()
        gc.freeze()
        try:
            start = time.perf_counter()
            results = [RequestResult(i, start + offset) for i, offset in enumerate(offsets)]
            tasks = []
            for i, result in enumerate(results):
                await _sleep_until(result.scheduled)
                tasks.append(asyncio.create_task(one(i, result)))
            await asyncio.gather(*tasks)
            end = time.perf_counter()
        finally:
            gc.unfreeze()
    report = summarize(config, specs, results, start, end, counter, model)
    if config.save_responses is not None:
        write_responses(config.save_responses, specs, results, start)
    return report


def run_benchmark(config: BenchConfig, on_result: Callable[[RequestResult], None] | None = None) -> BenchReport:
    """Run one open-loop benchmark (blocking) and return its report."""
    return asyncio.run(run_benchmark_async(config, on_result))
