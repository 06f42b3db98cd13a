"""Summary statistics of a run, with `vllm bench serve` field names, and the per-request response log."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from vibeserve.bench.workload import BenchConfig, RequestSpec, TokenCounter

if TYPE_CHECKING:
    from vibeserve.bench.client import RequestResult

FORMAT_VERSION = 1


class SendLag(BaseModel):
    """Actual send time minus scheduled time, in ms (includes waiting for a --max-concurrency slot)."""

    mean: float
    p50: float
    p99: float
    max: float


class BenchReport(BaseModel):
    """One run's summary; latency fields are in ms and named as `vllm bench serve` names them."""

    format_version: int = FORMAT_VERSION
    date: str
    model_id: str
    endpoint: str
    num_prompts: int
    completed: int
    failed: int
    failures: dict[str, int]
    total_input_tokens: int
    total_output_tokens: int
    duration: float
    request_throughput: float
    request_goodput: float | None
    output_throughput: float
    total_token_throughput: float
    mean_ttft_ms: float
    median_ttft_ms: float
    std_ttft_ms: float
    p90_ttft_ms: float
    p99_ttft_ms: float
    mean_tpot_ms: float
    median_tpot_ms: float
    std_tpot_ms: float
    p90_tpot_ms: float
    p99_tpot_ms: float
    mean_itl_ms: float
    median_itl_ms: float
    std_itl_ms: float
    p90_itl_ms: float
    p99_itl_ms: float
    mean_e2el_ms: float
    median_e2el_ms: float
    std_e2el_ms: float
    p90_e2el_ms: float
    p99_e2el_ms: float
    request_rate: float | str
    offered_rate: float | None
    achieved_rate: float | None
    send_lag_ms: SendLag
    max_concurrency: int | None
    seed: int
    nonce: bool
    token_counter: str
    goodput: dict[str, float]
    config: BenchConfig


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); 0.0 for no values, as vLLM does."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_fields(name: str, values_ms: list[float]) -> dict[str, float]:
    return {
        f"mean_{name}_ms": statistics.fmean(values_ms) if values_ms else 0.0,
        f"median_{name}_ms": statistics.median(values_ms) if values_ms else 0.0,
        f"std_{name}_ms": statistics.pstdev(values_ms) if values_ms else 0.0,
        f"p90_{name}_ms": percentile(values_ms, 90),
        f"p99_{name}_ms": percentile(values_ms, 99),
    }


def request_latencies(result: RequestResult) -> tuple[float, float, float | None, list[float]]:
    """(ttft, e2el, tpot or None, itls) in ms for one completed request."""
    start = result.written if result.written is not None else result.sent  # on the wire, else sending began
    ttft = (result.first_text - start) * 1000
    e2el = (result.end - start) * 1000
    tpot = (e2el - ttft) / (result.output_tokens - 1) if result.output_tokens > 1 else None
    itls = [(b - a) * 1000 for a, b in zip(result.chunk_times, result.chunk_times[1:], strict=False)]
    return ttft, e2el, tpot, itls


def meets_slo(ttft: float, e2el: float, tpot: float | None, slos: dict[str, float]) -> bool:
    measured = {"ttft": ttft, "e2el": e2el, "tpot": tpot or 0.0}
    return all(measured[key] <= limit for key, limit in slos.items())


def summarize(
    config: BenchConfig,
    specs: list[RequestSpec],
    results: list[RequestResult],
    start: float,
    end: float,
    counter: TokenCounter,
    model: str,
) -> BenchReport:
    """The report of one run; output tokens are counted here, from the received text."""
    for result in results:
        result.output_tokens = counter.count(result.text) if result.ok else 0
    done = [r for r in results if r.ok]
    ttfts, e2els, tpots, itls, good = [], [], [], [], 0
    for result in done:
        ttft, e2el, tpot, request_itls = request_latencies(result)
        ttfts.append(ttft)
        e2els.append(e2el)
        itls += request_itls
        if tpot is not None:
            tpots.append(tpot)
        good += meets_slo(ttft, e2el, tpot, config.goodput)
    duration = end - start
    input_tokens = sum(specs[r.index].input_tokens for r in done)
    output_tokens = sum(r.output_tokens for r in done)
    sent = sorted(r.sent for r in results if r.sent is not None)
    lags = [(r.sent - r.scheduled) * 1000 for r in results if r.sent is not None]
    span = sent[-1] - sent[0] if len(sent) > 1 else 0.0
    burst = config.arrival == "burst" or math.isinf(config.rate)
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    return BenchReport(
        date=time.strftime("%Y%m%d-%H%M%S"),
        model_id=model,
        endpoint=config.endpoint,
        num_prompts=len(results),
        completed=len(done),
        failed=len(results) - len(done),
        failures=dict(Counter(r.error or "not_sent" for r in results if not r.ok)),
        total_input_tokens=input_tokens,
        total_output_tokens=output_tokens,
        duration=duration,
        request_throughput=per_s(len(done)),
        request_goodput=per_s(good) if config.goodput else None,
        output_throughput=per_s(output_tokens),
        total_token_throughput=per_s(input_tokens + output_tokens),
        **latency_fields("ttft", ttfts),
        **latency_fields("tpot", tpots),
        **latency_fields("itl", itls),
        **latency_fields("e2el", e2els),
        request_rate="inf" if burst else config.rate,
        offered_rate=None if burst else config.rate,
        achieved_rate=(len(sent) - 1) / span if span > 0 else None,
        send_lag_ms=SendLag(
            mean=statistics.fmean(lags) if lags else 0.0,
            p50=percentile(lags, 50),
            p99=percentile(lags, 99),
            max=max(lags, default=0.0),
        ),
        max_concurrency=config.max_concurrency,
        seed=config.seed,
        nonce=config.nonce,
        token_counter=counter.name,
        goodput=config.goodput,
        config=config,
    )


def write_responses(path: Path, specs: list[RequestSpec], results: list[RequestResult], start: float) -> None:
    """One JSON line per request: what was sent, the text received, its timing and any failure."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for spec, result in zip(specs, results, strict=True):
            row: dict = {"index": spec.index, "max_tokens": spec.max_tokens}
            row.update({"prompt": spec.prompt} if spec.prompt is not None else {"messages": spec.messages})
            if spec.extra:
                row["extra"] = spec.extra
            row.update(
                text=result.text,
                ok=result.ok,
                error=result.error,
                detail=result.detail or None,
                input_tokens=spec.input_tokens,
                output_tokens=result.output_tokens,
                scheduled_ms=(result.scheduled - start) * 1000,
                send_lag_ms=(result.sent - result.scheduled) * 1000 if result.sent is not None else None,
            )
            if result.ok:
                ttft, e2el, tpot, _ = request_latencies(result)
                row.update(ttft_ms=ttft, e2el_ms=e2el, tpot_ms=tpot)
            f.write(json.dumps(row) + "\n")
