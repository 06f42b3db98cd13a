"""What this machine could at best do for the SmolLM2 kit's loads in fp32: one JSON object.

A serving system's throughput is bounded by three things, each measured or counted here, never assumed:

- **arrivals**: at the kit's load requests arrive over a few seconds (seeded Poisson); no server can
  finish before the last one arrives and has had its own output tokens decoded one step at a time;
- **prefill compute**: every prompt token not served from a prefix cache passes through every projection
  once; the script times those projections (``F.linear``, the kernel every candidate here uses) on
  packed prompt tokens, so the rate is what this machine's fp32 matmul does at these shapes, and it
  also times one large square matmul for the machine's fp32 peak;
- **decode steps**: each step runs every weight of the model once for the whole batch; the script times
  all 30 layers' projections plus the output projection for a batch of the kit's size, with nothing
  else (no attention, no norms, no Python scheduling): the floor of a step.

The bound at a load is the output tokens over the least time those allow:

- capacity (all requests at once): prefill of every prompt's uncached tokens, then ``output_len`` steps;
- the kit's load: the larger of (the work: all prefill plus ``output_len`` full-batch steps) and (the
  last arrival plus its own prefill and ``output_len`` steps).

    python benchmarks/roofline.py [--model examples/targets/smollm2-chat-cpu/artifacts/model]
                                  [--threads 2] [--repeats 20]

Run it on a quiet machine; it reports the machine's other load while it ran (``other_cores``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vibeserve.bench.workload import BenchConfig, arrival_times, build_requests, load_token_counter  # noqa: E402
from vibeserve.gates.load import LoadMeter  # noqa: E402

KIT = ROOT / "examples" / "targets" / "smollm2-chat-cpu"
# The kit's [benchmark] load, and the peers' capacity load (16 at once, 64 tokens each).
KIT_LOAD = {"rate": 4.0, "num_requests": 16, "input_len": 64, "output_len": 48, "prefix_len": 32}
CAPACITY = {**KIT_LOAD, "rate": float("inf"), "output_len": 64}
PREFIX_BLOCK = 16  # a prefix cache keeps whole blocks of this many tokens (as the demo's round 2 does)


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after two warm-up calls."""
    fn(), fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def projections(cfg: dict) -> list[tuple[int, int]]:
    """(in, out) of one layer's projections, q/k/v and gate/up fused as the demo's rounds fuse them."""
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    head_dim = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * head_dim, cfg["num_key_value_heads"] * head_dim
    return [(h, q + 2 * kv), (q, h), (h, 2 * inter), (inter, h)]


def model_pass(cfg: dict, rows: int, head_rows: int):
    """A closure running every projection of the model once on ``rows`` tokens (the output projection on
    ``head_rows``), with weights laid out as the model's, and its multiply-adds."""
    layers = [[torch.randn(o, i) * 0.02 for i, o in projections(cfg)] for _ in range(cfg["num_hidden_layers"])]
    head = torch.randn(cfg["vocab_size"], cfg["hidden_size"]) * 0.02
    inputs = {i: torch.randn(rows, i) for i, _ in projections(cfg)}
    head_in = torch.randn(head_rows, cfg["hidden_size"])

    def run() -> None:
        for weights in layers:
            for w in weights:
                F.linear(inputs[w.shape[1]], w)
        F.linear(head_in, head)

    macs = rows * cfg["num_hidden_layers"] * sum(i * o for i, o in projections(cfg))
    macs += head_rows * cfg["vocab_size"] * cfg["hidden_size"]
    return run, macs


def workload(model: Path, load: dict) -> dict:
    """Prompt tokens per request (chat template applied), the shared prefix a block cache can reuse,
    and the arrival times, for one of the loads above."""
    config = BenchConfig(url="http://127.0.0.1:1", endpoint="chat", nonce=True, seed=0, tokenizer=model, **load)
    specs = build_requests(config, load_token_counter(model))
    tok = AutoTokenizer.from_pretrained(model)
    # As the servers here encode a chat: the template rendered, then tokenized (its special tokens literal).
    texts = [tok.apply_chat_template(s.messages, add_generation_prompt=True, tokenize=False) for s in specs]
    ids = [tok(text, add_special_tokens=False)["input_ids"] for text in texts]
    shared = min(_common(ids[0], other) for other in ids[1:]) // PREFIX_BLOCK * PREFIX_BLOCK
    arrivals = arrival_times(len(specs), load["rate"], "poisson", 0)
    return {"prompt_tokens": [len(x) for x in ids], "shared_prefix": shared, "arrivals": arrivals}


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def bound(w: dict, output_len: int, prefill_s_per_token: float, step_s: float, one_step_s: float) -> dict:
    n = len(w["prompt_tokens"])
    # The first prompt runs its shared prefix; every later one only what follows it.
    uncached = sum(w["prompt_tokens"]) - (n - 1) * w["shared_prefix"]
    work_s = uncached * prefill_s_per_token + output_len * step_s
    last = w["arrivals"][-1] + (w["prompt_tokens"][-1] - w["shared_prefix"]) * prefill_s_per_token
    arrival_s = last + output_len * one_step_s
    least = max(work_s, arrival_s)
    return {
        "output_tokens": n * output_len,
        "uncached_prompt_tokens": uncached,
        "last_arrival_s": round(w["arrivals"][-1], 3),
        "prefill_s": round(uncached * prefill_s_per_token, 3),
        "decode_s": round(output_len * step_s, 3),
        "compute_bound_tok_s": round(n * output_len / work_s, 1),
        "arrival_bound_tok_s": round(n * output_len / arrival_s, 1),
        "bound_tok_s": round(n * output_len / least, 1),
        "limited_by": "compute" if work_s >= arrival_s else "arrivals",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=KIT / "artifacts" / "model")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be at least 1")
    if not (args.model / "config.json").is_file():
        parser.error(f"{args.model}: no config.json; run the kit's set-up (vibeserve validate {KIT}) first")
    cfg = json.loads((args.model / "config.json").read_text())
    torch.set_num_threads(args.threads)
    with LoadMeter() as meter, torch.inference_mode():
        big = torch.randn(2048, 2048)
        peak_s = timed(lambda: torch.mm(big, big), args.repeats)
        kit, cap = workload(args.model, KIT_LOAD), workload(args.model, CAPACITY)
        # Prefill: every prompt token of a capacity burst, packed, through every projection; the output
        # projection only on each prompt's last position.
        packed = sum(cap["prompt_tokens"]) - (len(cap["prompt_tokens"]) - 1) * cap["shared_prefix"]
        run, macs = model_pass(cfg, packed, len(cap["prompt_tokens"]))
        prefill_s = timed(run, max(3, args.repeats // 4))
        steps = {b: timed(model_pass(cfg, b, b)[0], args.repeats) for b in (1, KIT_LOAD["num_requests"])}
    per_token = prefill_s / packed
    step16, step1 = steps[KIT_LOAD["num_requests"]], steps[1]
    weights_mb = (sum(i * o for i, o in projections(cfg)) * cfg["num_hidden_layers"]
                  + cfg["vocab_size"] * cfg["hidden_size"]) * 4 / 2**20
    result = {
        "benchmark": "roofline",
        "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
        "threads": args.threads,
        "other_cores": None if meter.other_cores is None else round(meter.other_cores, 2),
        "peak_gflops_2048_square": round(2 * 2048**3 / peak_s / 1e9, 1),
        "prefill_gflops": round(2 * macs / prefill_s / 1e9, 1),
        "prefill_tokens_timed": packed,
        "prefill_ms_per_token": round(per_token * 1e3, 3),
        "weights_mb": round(weights_mb),
        "decode_step_floor_ms": {str(b): round(s * 1e3, 2) for b, s in steps.items()},
        "decode_step_gb_s": round(weights_mb / 1024 / step16, 1),
        "kit_load": bound(kit, KIT_LOAD["output_len"], per_token, step16, step1),
        "capacity": bound(cap, CAPACITY["output_len"], per_token, step16, step1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
