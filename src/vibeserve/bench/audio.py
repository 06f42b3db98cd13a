"""The streaming-audio load generator: several speech streams at once, each sending its chunks on a fixed clock,
timing each chunk's partial transcript (`python -m vibeserve.bench.audio`).

The protocol (HTTP/1.1; audio is 16-bit signed little-endian mono PCM at 16 kHz):

- ``POST /v1/streams`` with ``{"sample_rate": 16000}`` opens a stream: ``{"stream_id": ID}``.
- ``POST /v1/streams/ID/chunks?seq=K&max_tokens=N`` carries chunk K (from 0) as the raw body. The answer is
  ``200`` with an NDJSON body, sent as it is made (chunked): ``{"token": T}`` per token of the partial
  transcript of all the audio received so far, then ``{"done": true, "finish_reason": "stop"|"length"}``.
  A line ``{"error": ...}``, another status, or a body that ends without ``done`` is a failed chunk.
- ``DELETE /v1/streams/ID`` closes it.

The clock is open-loop: stream i starts ``i * chunk_ms / streams`` after the first, and sends chunk K at
``start_i + K * chunk_ms`` whether or not its earlier chunks were answered (each chunk is its own request).
A chunk's latency counts from the moment its last byte was written (its arrival) to the first ``token``
line (``ttft``) and to the ``done`` line (``e2el``); ``send_lag`` is how late the send began after its due
time. Every timestamp is ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux, shared by all processes), so a
server's own log can be set beside the client's. Depends on no other vibeserve module but the bench client's
helpers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import statistics
import sys
import time
import wave
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from vibeserve.bench.client import _sleep_until, base_url

RATE = 16000
FRAME = 80  # samples in 5 ms: chunks are whole multiples of it


class AudioBenchError(Exception):
    """A usage problem (bad clip, unreachable server): exit 2."""


@dataclass
class AudioBenchConfig:
    url: str
    clips: list[Path]
    streams: int = 4
    chunk_ms: int = 320
    max_chunks: int | None = None  # per stream; the clip's whole chunks by default
    max_tokens: int = 8
    nonce: bool = True
    seed: int = 0
    request_timeout: float = 300.0
    save_responses: Path | None = None


@dataclass
class ChunkResult:
    stream: int
    seq: int
    samples: int  # the stream's samples up to and including this chunk
    scheduled: float
    sent: float | None = None
    written: float | None = None
    first_token: float | None = None
    end: float | None = None
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None
    detail: str = ""

    def fail(self, reason: str, detail: str = "") -> None:
        if self.error is None:
            self.error, self.detail = reason, detail[:300]


def read_clip(path: Path) -> array:
    """A WAV clip's samples (16-bit mono 16 kHz, else `AudioBenchError`)."""
    try:
        with wave.open(str(path)) as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, RATE):
                raise AudioBenchError(f"{path}: expected 16-bit mono {RATE} Hz WAV, got {w.getnchannels()} channel(s), "
                                      f"{8 * w.getsampwidth()}-bit, {w.getframerate()} Hz")
            samples = array("h", w.readframes(w.getnframes()))
    except (OSError, wave.Error, EOFError) as e:
        raise AudioBenchError(f"{path}: cannot read it as WAV: {e}") from None
    if sys.byteorder != "little":
        samples.byteswap()
    return samples


def stream_audio(samples: array, nonce: int | None) -> bytes:
    """The PCM a stream sends: the clip itself, or with a nonce a seeded ±1 dither on every sample, so no two
    runs send the same bytes (a cache keyed on audio gains nothing) while the speech is unchanged."""
    out = array("h", samples)
    if nonce is not None:
        steps = random.Random(nonce).choices((-1, 0, 1), k=len(out))
        out = array("h", (min(32767, max(-32768, v + d)) for v, d in zip(out, steps, strict=True)))
    if sys.byteorder != "little":
        out.byteswap()
    return out.tobytes()


@dataclass
class StreamPlan:
    index: int
    clip: Path
    nonce: int | None
    pcm: bytes
    chunk_bytes: int
    chunks: int
    offset: float  # start, seconds after the run's start


def plan_streams(config: AudioBenchConfig) -> list[StreamPlan]:
    if not config.clips:
        raise AudioBenchError("no audio clips given (--audio)")
    if config.streams < 1 or config.chunk_ms < 5 or config.chunk_ms % 5 or config.max_tokens < 1:
        raise AudioBenchError("--streams and --max-tokens must be positive, --chunk-ms a positive multiple of 5")
    chunk_samples = RATE * config.chunk_ms // 1000
    order = sorted(config.clips)
    random.Random(config.seed).shuffle(order)
    base = random.SystemRandom().randrange(2**31) if config.nonce else None
    plans = []
    for i in range(config.streams):
        clip = order[i % len(order)]
        samples = read_clip(clip)
        chunks = len(samples) // chunk_samples
        if config.max_chunks is not None:
            chunks = min(chunks, config.max_chunks)
        if chunks < 1:
            raise AudioBenchError(f"{clip}: shorter than one {config.chunk_ms} ms chunk")
        nonce = None if base is None else base + i
        pcm = stream_audio(samples[: chunks * chunk_samples], nonce)
        plans.append(StreamPlan(i, clip, nonce, pcm, 2 * chunk_samples, chunks,
                                offset=i * config.chunk_ms / 1000 / config.streams))
    return plans


async def _send_chunk(client: httpx.AsyncClient, url: str, body: bytes, result: ChunkResult, max_tokens: int,
                      timeout: float) -> None:
    async def on_trace(event: str, info: dict) -> None:
        if event == "http11.send_request_body.complete":
            result.written = time.perf_counter()

    request = client.build_request("POST", url, params={"seq": result.seq, "max_tokens": max_tokens}, content=body,
                                   headers={"content-type": "application/octet-stream"})
    request.extensions["trace"] = on_trace
    result.sent = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            response = await client.send(request, stream=True)
            try:
                if response.status_code != 200:
                    raise _Failed(f"http_{response.status_code}", (await response.aread()).decode(errors="replace"))
                async for line in response.aiter_lines():
                    now = time.perf_counter()
                    if not line.strip() or result.end is not None:
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        raise _Failed("malformed_line", line) from None
                    if not isinstance(obj, dict) or "error" in obj:
                        raise _Failed("server_error", line)
                    if "token" in obj:
                        if not isinstance(obj["token"], int) or isinstance(obj["token"], bool):
                            raise _Failed("malformed_line", line)
                        if result.first_token is None:
                            result.first_token = now
                        result.tokens.append(obj["token"])
                    elif obj.get("done") is True:
                        result.end, result.finish_reason = now, str(obj.get("finish_reason"))
            finally:
                await response.aclose()
        if result.end is None:
            raise _Failed("missing_done", "the answer ended without a done line")
        if result.first_token is None:
            result.first_token = result.end  # an empty transcript: its first (and last) word is "done"
        if result.written is None:  # no trace event (another transport): the send began, so time from there
            result.written = result.sent
    except _Failed as e:
        result.fail(e.reason, e.detail)
    except (TimeoutError, httpx.TimeoutException):
        result.fail("timeout", f"no complete answer within {timeout} s")
    except httpx.HTTPError as e:
        result.fail("connection_error", f"{type(e).__name__}: {e}")


class _Failed(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


async def _open_stream(client: httpx.AsyncClient, url: str, timeout: float) -> str:
    r = await client.post(url + "/v1/streams", json={"sample_rate": RATE}, timeout=timeout)
    r.raise_for_status()
    return str(r.json()["stream_id"])


async def _run_stream(client: httpx.AsyncClient, url: str, plan: StreamPlan, stream_id: str | None, start: float,
                      config: AudioBenchConfig, results: list[ChunkResult]) -> None:
    period = config.chunk_ms / 1000
    stream_start = start + plan.offset
    mine = [ChunkResult(plan.index, k, (k + 1) * plan.chunk_bytes // 2, stream_start + k * period)
            for k in range(plan.chunks)]
    results.extend(mine)
    if stream_id is None:
        for c in mine:
            c.fail("open_failed", "POST /v1/streams failed")
        return
    chunk_url = f"{url}/v1/streams/{stream_id}/chunks"
    tasks = []
    for k, result in enumerate(mine):
        await _sleep_until(result.scheduled)
        body = plan.pcm[k * plan.chunk_bytes:(k + 1) * plan.chunk_bytes]
        tasks.append(asyncio.create_task(
            _send_chunk(client, chunk_url, body, result, config.max_tokens, config.request_timeout)))
    await asyncio.gather(*tasks)
    with contextlib.suppress(httpx.HTTPError):  # closing is a courtesy; the chunks' answers are what count
        await client.delete(f"{url}/v1/streams/{stream_id}", timeout=config.request_timeout)


async def run_audio_benchmark_async(config: AudioBenchConfig) -> dict:
    plans = plan_streams(config)
    url = base_url(config.url)
    total = sum(p.chunks for p in plans)
    limits = httpx.Limits(max_connections=total + len(plans), max_keepalive_connections=total + len(plans))
    async with httpx.AsyncClient(limits=limits, timeout=config.request_timeout + 5) as client:
        try:
            await client.get(url + "/health", timeout=10)
        except httpx.HTTPError as e:
            raise AudioBenchError(f"cannot reach the server at {url}: {e}") from None
        # Streams are opened before the clock starts: opening one is not part of any chunk's time.
        ids: list[str | None] = []
        for _ in plans:
            try:
                ids.append(await _open_stream(client, url, config.request_timeout))
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                ids.append(None)
        results: list[ChunkResult] = []
        start = time.perf_counter()
        await asyncio.gather(*(_run_stream(client, url, p, sid, start, config, results)
                               for p, sid in zip(plans, ids, strict=True)))
        end = time.perf_counter()
    results.sort(key=lambda c: (c.stream, c.seq))
    report = summarize(config, plans, results, start, end)
    if config.save_responses is not None:
        write_responses(config.save_responses, config, plans, results, start)
    return report


def run_audio_benchmark(config: AudioBenchConfig) -> dict:
    return asyncio.run(run_audio_benchmark_async(config))


def _stats(prefix: str, values: list[float]) -> dict:
    if not values:
        return {f"{k}_{prefix}_ms": math.nan for k in ("mean", "median", "std", "p90", "p99")}
    ordered = sorted(values)

    def pct(q: float) -> float:  # linear interpolation, as numpy's default
        pos = (len(ordered) - 1) * q
        lo, hi = math.floor(pos), math.ceil(pos)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {f"mean_{prefix}_ms": statistics.fmean(values), f"median_{prefix}_ms": pct(0.5),
            f"std_{prefix}_ms": statistics.pstdev(values), f"p90_{prefix}_ms": pct(0.9), f"p99_{prefix}_ms": pct(0.99)}


def summarize(config: AudioBenchConfig, plans: list[StreamPlan], results: list[ChunkResult], start: float,
              end: float) -> dict:
    ok = [c for c in results if c.error is None]
    failures: dict[str, int] = {}
    for c in results:
        if c.error is not None:
            failures[c.error] = failures.get(c.error, 0) + 1
    lags = [(c.sent - c.scheduled) * 1000 for c in results if c.sent is not None]
    return {
        "protocol": "vibeserve-audio-stream/1",
        "streams": len(plans), "chunk_ms": config.chunk_ms, "max_tokens": config.max_tokens,
        "chunks": len(results), "completed": len(ok), "failed": len(results) - len(ok), "failures": failures,
        "audio_s": sum(p.chunks for p in plans) * config.chunk_ms / 1000, "duration": end - start,
        **_stats("ttft", [(c.first_token - c.written) * 1000 for c in ok]),
        **_stats("e2el", [(c.end - c.written) * 1000 for c in ok]),
        "mean_send_lag_ms": statistics.fmean(lags) if lags else math.nan,
        "max_send_lag_ms": max(lags) if lags else math.nan,
        "output_tokens": sum(len(c.tokens) for c in ok),
    }


def write_responses(path: Path, config: AudioBenchConfig, plans: list[StreamPlan], results: list[ChunkResult],
                    start: float) -> None:
    """One JSON line per chunk: what was sent (clip, nonce, samples so far), what came back, and its times,
    both relative (ms) and absolute (`*_at`, perf_counter seconds)."""
    with path.open("w") as f:
        for c in results:
            plan = plans[c.stream]
            f.write(json.dumps({
                "stream": c.stream, "clip": str(plan.clip), "nonce": plan.nonce, "chunk_ms": config.chunk_ms,
                "seq": c.seq, "samples": c.samples, "max_tokens": config.max_tokens, "tokens": c.tokens,
                "finish_reason": c.finish_reason, "ok": c.error is None, "error": c.error, "detail": c.detail,
                "scheduled_ms": (c.scheduled - start) * 1000,
                "send_lag_ms": None if c.sent is None else (c.sent - c.scheduled) * 1000,
                "ttft_ms": None if c.error or c.written is None else (c.first_token - c.written) * 1000,
                "e2el_ms": None if c.error or c.written is None else (c.end - c.written) * 1000,
                "scheduled_at": c.scheduled, "sent_at": c.sent, "written_at": c.written,
                "first_token_at": c.first_token, "end_at": c.end,
            }) + "\n")


def clip_paths(items: list[str]) -> list[Path]:
    """WAV files named, and the WAV files of directories named (sorted)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(p.glob("*.wav"))
        elif p.is_file():
            out.append(p)
        else:
            raise AudioBenchError(f"--audio {item}: no such file or directory")
    if not out:
        raise AudioBenchError(f"--audio {' '.join(items)}: no .wav files there")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vibeserve.bench.audio", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--audio", nargs="+", required=True, help="WAV clips (16-bit mono 16 kHz) or directories of them")
    p.add_argument("--streams", type=int, default=4, help="streams at once; stream i plays clip i (after a seeded shuffle)")
    p.add_argument("--chunk-ms", type=int, default=320, help="audio per chunk, and the clock's period")
    p.add_argument("--max-chunks", type=int, default=None, help="at most this many chunks per stream")
    p.add_argument("--max-tokens", type=int, default=8, help="max_tokens of every chunk's partial transcript")
    p.add_argument("--seed", type=int, default=0, help="which clip each stream plays")
    p.add_argument("--nonce", action=argparse.BooleanOptionalAction, default=True,
                   help="a fresh ±1 dither per stream and run (recorded with the answers)")
    p.add_argument("--request-timeout", type=float, default=300.0, help="seconds per chunk, answer included")
    p.add_argument("--out", type=Path, help="write the JSON report here (else stdout)")
    p.add_argument("--save-responses", type=Path, help="write one JSON line per chunk here")
    p.add_argument("--no-progress", action="store_true", help="accepted for symmetry with vibeserve.bench; prints nothing")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> AudioBenchConfig:
    return AudioBenchConfig(url=args.url, clips=clip_paths(args.audio), streams=args.streams, chunk_ms=args.chunk_ms,
                            max_chunks=args.max_chunks, max_tokens=args.max_tokens, nonce=args.nonce, seed=args.seed,
                            request_timeout=args.request_timeout, save_responses=args.save_responses)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run_audio_benchmark(config_from_args(args))
    except AudioBenchError as e:
        print(f"vibeserve.bench.audio: {e}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    if report["failed"]:
        print(f"{report['failed']} of {report['chunks']} chunks failed: {report['failures']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
