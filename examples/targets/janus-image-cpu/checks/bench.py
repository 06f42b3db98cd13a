"""The benchmark: images one at a time, latency per image (its p50 ranks candidates).

    python checks/bench.py --url URL --prompts checks/prompts.jsonl --num-images 4 --seed 0 \
        --out report.json --save-responses responses.jsonl

Each request is ``POST /v1/images/generations`` with a prompt of ``--prompts`` (in turn, from a seeded
start) and a nonce of two vocabulary words, so no two requests of a run, or of two runs, are the same and
a response cache gains nothing. The next request is sent when the last answered (single-request latency,
the paper's scenario F metric). A request fails on an HTTP error, a timeout or an answer without one image
of ``image_tokens`` and ``b64_json``.

Report (``--out``): ``p50_latency_ms`` (the metric), ``mean_latency_ms``, ``p90_latency_ms``,
``min_latency_ms``, ``max_latency_ms``, ``completed``, ``failed``, ``failures``, ``duration_s``.
Answers (``--save-responses``, for vibeserve's output audit): one line per request with ``kind: "image"``,
the ``prompt`` sent, ``image_tokens``, ``b64_json``, ``ok`` and ``latency_ms``. Exit 1 when a request failed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

# Words the kit's tokenizer knows (setup_model.py's vocabulary), for the nonce.
NONCE_WORDS = ["red", "blue", "green", "small", "large", "old", "new", "cat", "dog", "owl", "fox", "boat", "tree", "lake", "hill", "star", "moon", "stone", "river", "garden", "window", "morning", "evening"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--prompts", required=True, type=Path)
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--request-timeout", type=float, default=300)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--save-responses", type=Path)
    args = parser.parse_args(argv)
    prompts = [json.loads(x)["prompt"] for x in args.prompts.read_text().splitlines() if x.strip()]
    rng = random.Random(f"{args.seed}:{time.time_ns()}")  # a fresh nonce every run
    start = random.Random(args.seed).randrange(len(prompts))
    rows, latencies, failures = [], [], []
    t_run = time.perf_counter()
    with httpx.Client() as client:
        for i in range(args.num_images):
            prompt = f"{prompts[(start + i) % len(prompts)]}, {rng.choice(NONCE_WORDS)} {rng.choice(NONCE_WORDS)}"
            row = {"index": i, "kind": "image", "prompt": prompt}
            t0 = time.perf_counter()
            try:
                r = client.post(args.url + "/v1/images/generations",
                                json={"prompt": prompt, "n": 1, "response_format": "b64_json"},
                                timeout=args.request_timeout)
                ms = (time.perf_counter() - t0) * 1000
                if r.status_code != 200:
                    raise ValueError(f"HTTP {r.status_code}: {r.text[:200]}")
                image = r.json()["data"][0]
                if not isinstance(image.get("image_tokens"), list) or not isinstance(image.get("b64_json"), str):
                    raise ValueError("the answer lacks image_tokens or b64_json")
                latencies.append(ms)
                row.update(ok=True, latency_ms=round(ms, 2), image_tokens=image["image_tokens"],
                           b64_json=image["b64_json"])
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
                failures.append(f"request {i}: {type(e).__name__}: {e}")
                row.update(ok=False, error=f"{type(e).__name__}: {e}"[:300])
            rows.append(row)
    duration = time.perf_counter() - t_run
    report: dict = {"completed": len(latencies), "failed": len(failures), "failures": failures[:5],
                    "duration_s": round(duration, 3), "num_images": args.num_images}
    if latencies:
        report.update(p50_latency_ms=round(statistics.median(latencies), 2),
                      mean_latency_ms=round(statistics.fmean(latencies), 2),
                      p90_latency_ms=round(percentile(latencies, 0.9), 2),
                      min_latency_ms=round(min(latencies), 2), max_latency_ms=round(max(latencies), 2))
    args.out.write_text(json.dumps(report, indent=2))
    if args.save_responses:
        args.save_responses.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(json.dumps({k: v for k, v in report.items() if k != "failures"}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
