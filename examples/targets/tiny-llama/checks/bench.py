"""Benchmark for tiny-llama: a closed-loop load of streaming /v1/completions requests.

    python checks/bench.py --url http://127.0.0.1:PORT --model artifacts/model --out report.json

``--concurrency`` clients each send their next request as soon as the previous one finishes, until
``--requests`` have been sent. Prompts are fixed vocabulary words with a nonce of random words appended
per run and request, so no two prompts repeat and caching responses gains nothing. Output tokens are
counted by re-encoding the received text with the target's tokenizer, never from the server's usage.

``--save-responses`` writes each measured request's prompt and received text (the framework audits a
sample of them against the reference). Metric names follow ``vllm bench serve``. Any failed or cut-short request (non-200, malformed chunk,
no ``data: [DONE]``, timeout) fails the whole run: exit status 1, with the errors in the report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tokenizers import Tokenizer

NONCE_WORDS = 3  # ~500**3 combinations: a repeat within or across runs is vanishingly unlikely


@dataclass
class Result:
    prompt: str = ""
    text: str = ""
    output_tokens: int = 0
    ttft_s: float | None = None
    latency_s: float = 0.0
    error: str | None = None


@dataclass
class Run:
    prompts: list[str]
    results: list[Result] = field(default_factory=list)
    next_index: int = 0


def make_prompts(words: list[str], n: int, body_seed: int) -> list[str]:
    body = random.Random(body_seed)  # the same prompt bodies every run
    nonce = random.SystemRandom()  # different tails every run
    prompts = []
    for _ in range(n):
        text = [body.choice(words) for _ in range(body.randint(16, 64))]
        text += [nonce.choice(words) for _ in range(NONCE_WORDS)]
        prompts.append(" ".join(text))
    return prompts


async def one_request(
    client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int, tokenizer: Tokenizer, timeout: float
) -> Result:
    body = {
        "model": "tiny-llama",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    result, parts, done = Result(prompt=prompt), [], False
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout), client.stream("POST", url + "/v1/completions", json=body) as r:
            if r.status_code != 200:
                result.error = f"status {r.status_code}: {(await r.aread())[:300]!r}"
                return result
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    done = True
                    break
                text = json.loads(data)["choices"][0]["text"]
                if not isinstance(text, str):
                    raise TypeError(f"choices[0].text is {text!r}")
                if text and result.ttft_s is None:
                    result.ttft_s = time.perf_counter() - start
                parts.append(text)
    except TimeoutError:
        result.error = f"no complete answer within {timeout} s"
        return result
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
        result.error = f"{type(e).__name__}: {e}"
        return result
    result.latency_s = time.perf_counter() - start
    result.text = "".join(parts)
    if not done:
        result.error = "stream ended without data: [DONE]"
    result.output_tokens = len(tokenizer.encode("".join(parts), add_special_tokens=False).ids)
    return result


async def client_loop(run: Run, client: httpx.AsyncClient, args, tokenizer: Tokenizer) -> None:
    # Stop taking new requests after the first failure: the run has failed anyway.
    while run.next_index < len(run.prompts) and not any(r.error for r in run.results):
        prompt = run.prompts[run.next_index]
        run.next_index += 1
        run.results.append(
            await one_request(client, args.url, prompt, args.max_tokens, tokenizer, args.timeout)
        )


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(run: Run, duration: float, args) -> dict:
    ok = [r for r in run.results if not r.error]
    ttfts = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
    # Time per output token after the first, per request (as vllm computes it).
    tpots = [
        (r.latency_s - r.ttft_s) * 1000 / (r.output_tokens - 1)
        for r in ok
        if r.ttft_s is not None and r.output_tokens > 1
    ]
    total = sum(r.output_tokens for r in ok)
    return {
        "completed": len(ok),
        "failed": len(run.results) - len(ok),
        "duration": duration,
        "total_output_tokens": total,
        "output_throughput": total / duration if duration > 0 else 0.0,
        "request_throughput": len(ok) / duration if duration > 0 else 0.0,
        "mean_ttft_ms": statistics.fmean(ttfts) if ttfts else None,
        "median_ttft_ms": statistics.median(ttfts) if ttfts else None,
        "p99_ttft_ms": percentile(ttfts, 99) if ttfts else None,
        "mean_tpot_ms": statistics.fmean(tpots) if tpots else None,
        "median_tpot_ms": statistics.median(tpots) if tpots else None,
        "num_requests": args.requests,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "errors": [r.error for r in run.results if r.error],
    }


async def bench(args, tokenizer: Tokenizer, words: list[str]) -> dict:
    limits = httpx.Limits(max_connections=args.concurrency + 1)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as client:
        for prompt in make_prompts(words, args.warmup, body_seed=args.seed + 1):
            warm = await one_request(client, args.url, prompt, args.max_tokens, tokenizer, args.timeout)
            if warm.error:
                return summarize(Run(prompts=[], results=[warm]), 0.0, args)
        run = Run(prompts=make_prompts(words, args.requests, body_seed=args.seed))
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(run, client, args, tokenizer) for _ in range(args.concurrency)))
        report = summarize(run, time.perf_counter() - start, args)
    if args.save_responses is not None:
        write_responses(args.save_responses, run.results, args.max_tokens)
    return report


def write_responses(path: Path, results: list[Result], max_tokens: int) -> None:
    """One JSON line per measured request: what was sent and the text that came back (the same rows as
    ``vibeserve.bench --save-responses``), so the framework can audit answers given under load."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for i, r in enumerate(results):
            row = {"index": i, "prompt": r.prompt, "max_tokens": max_tokens, "text": r.text,
                   "ok": r.error is None, "error": r.error}
            f.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", required=True, type=Path, help="artifact directory (for its tokenizer)")
    parser.add_argument("--out", required=True, type=Path, help="JSON report to write")
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1, help="untimed requests sent first")
    parser.add_argument("--timeout", type=float, default=60, help="seconds for each request")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompt bodies")
    parser.add_argument("--save-responses", type=Path, help="JSONL of each measured request's prompt and text")
    args = parser.parse_args(argv)
    args.url = args.url.rstrip("/")
    if min(args.requests, args.concurrency, args.max_tokens) < 1 or args.warmup < 0:
        parser.error("--requests, --concurrency and --max-tokens must be positive, --warmup non-negative")

    tokenizer = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    vocab = tokenizer.get_vocab()
    words = sorted((w for w in vocab if w.isalpha()), key=vocab.get)
    report = asyncio.run(bench(args, tokenizer, words))
    failed = report["failed"] or report["completed"] < args.requests
    if failed and not report["errors"]:
        report["errors"] = [f"only {report['completed']} of {args.requests} requests completed"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if failed:
        print(f"benchmark FAILED: {report['errors'][0]}")
        return 1
    print(
        f"output_throughput {report['output_throughput']:.1f} tok/s: {report['total_output_tokens']} tokens, "
        f"{report['completed']} requests in {report['duration']:.2f} s; "
        f"median TTFT {report['median_ttft_ms']} ms, median TPOT {report['median_tpot_ms']} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
