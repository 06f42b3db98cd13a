"""How faithfully `vibeserve.bench` measures: a mock OpenAI server with known delays, and rising rates.

Starts a mock OpenAI-compatible server (this file with --serve, a stdlib subprocess on 127.0.0.1) that
sends the first token TTFT ms after a request arrives and one token every ITL ms after that, on an
absolute schedule. Runs the load generator against it and prints ONE JSON object:

- latency: measured vs injected TTFT and ITL (mean, p50; absolute ms and relative %) for the
  completions and chat endpoints (chat sends a role-only chunk first, which must not count as TTFT),
  with the server's own emission error alongside; goal: error under max(2 %, 1 ms).
- rates: achieved vs offered rate and send lag (p50/p99/max) at rising Poisson rates with short
  outputs, until it breaks (achieved < 90 % of offered, p99 lag > 5 ms, or a failed request);
  goal: p99 send lag under 5 ms at 100 req/s.
- peers: guidellm against the same mock when a `guidellm` executable is given or on PATH.

    python benchmarks/bench_fidelity.py [--guidellm /tmp/glvenv/bin/guidellm --guidellm-processor DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RATES = [10, 25, 50, 100, 200, 400, 800, 1600, 3200]


# ---- the mock server (runs in its own process) -------------------------------------------------


def request_index(body: dict) -> int | None:
    """The request's index from the generator's nonce `[req-<seed>-<i>-<hex>]`, to match both sides."""
    text = body.get("prompt") or (body.get("messages") or [{}])[-1].get("content", "")
    match = re.search(r"\[req-\d+-(\d+)-[0-9a-f]+\]$", text)
    return int(match.group(1)) if match else None


class MockHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ttft_s, itl_s, tokens, log = 0.05, 0.01, 32, []  # set by serve()

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay per chunk

    def log_message(self, *args) -> None:
        pass

    def parse_request(self) -> bool:
        self.t_line = time.perf_counter()  # the request line has been read
        return super().parse_request()

    def _json(self, obj: object) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/stats"):
            self._json(self.log)
            self.log.clear()
        else:
            self._json({"object": "list", "data": [{"id": "mock", "object": "model"}]})

    def _event(self, obj: object) -> None:
        data = f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))  # one chunk, one write

    def do_POST(self) -> None:
        t_line = self.t_line
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        t0 = time.perf_counter()
        chat = self.path.endswith("/chat/completions")
        n = min(int(body.get("max_tokens", self.tokens)), self.tokens)
        if not body.get("stream"):
            time.sleep(self.ttft_s + (n - 1) * self.itl_s)
            text = " tok" * n
            choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            return self._json({"choices": [{"index": 0, **choice, "finish_reason": "length"}]})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if chat:
            self._event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        sent = []
        for k in range(n):
            delay = t0 + self.ttft_s + k * self.itl_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            choice = {"delta": {"content": " tok"}} if chat else {"text": " tok"}
            self._event({"choices": [{"index": 0, **choice, "finish_reason": None}]})
            sent.append(time.perf_counter() - t0)
        self._event({"choices": [], "usage": {"completion_tokens": n}})
        self._event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.log.append({"index": request_index(body), "t_line": t_line, "t0": t0, "emitted": sent})


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients closing idle keep-alives
            super().handle_error(request, client_address)


def serve(port: int, ttft_ms: float, itl_ms: float, tokens: int) -> None:
    MockHandler.ttft_s, MockHandler.itl_s, MockHandler.tokens = ttft_ms / 1000, itl_ms / 1000, tokens
    server = QuietServer(("127.0.0.1", port), MockHandler)
    server.serve_forever()


# ---- the measurements ------------------------------------------------------------------------


class MockServer:
    """The mock in a subprocess, so its threads never share a GIL with the load generator."""

    def __init__(self, ttft_ms: float, itl_ms: float, tokens: int):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["--serve", str(self.port), "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms), "--tokens", str(tokens)]
        self.proc = subprocess.Popen([sys.executable, __file__, *args])
        for _ in range(200):
            try:
                urllib.request.urlopen(self.url + "/v1/models", timeout=1).read()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mock server did not start")

    def stats(self) -> list[list[float]]:
        return json.loads(urllib.request.urlopen(self.url + "/stats", timeout=5).read())

    def __enter__(self) -> MockServer:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def error(measured: float, injected: float) -> dict:
    err = measured - injected
    return {"measured_ms": round(measured, 3), "injected_ms": injected, "error_ms": round(err, 3),
            "error_pct": round(100 * err / injected, 2), "within_goal": abs(err) < max(0.02 * injected, 1.0)}


def latency_fidelity(endpoint: str, ttft_ms: float, itl_ms: float, tokens: int, n: int) -> dict:
    from vibeserve.bench import BenchConfig, run_benchmark

    done = []
    with MockServer(ttft_ms, itl_ms, tokens) as mock:
        config = BenchConfig(url=mock.url, endpoint=endpoint, rate=10, num_requests=n, seed=1,
                             input_len=32, output_len=tokens)
        report = run_benchmark(config, on_result=done.append)
        server = {row["index"]: row for row in mock.stats()}
    # Both processes read CLOCK_MONOTONIC (perf_counter), so client and server times compare directly.
    # TTFT counts from when the request's last byte was written (`written`); the client's work before
    # that (`client_write`, from `sent`) is reported but is not part of the measured TTFT.
    parts: dict[str, list[float]] = {"client_write": [], "request_transit": [], "server_parse": [],
                                     "server_late": [], "response_transit": []}
    for r in done:
        s = server.get(r.index)
        if s is None or not r.ok:
            continue
        on_wire = r.written if r.written is not None else r.sent
        parts["client_write"].append((on_wire - r.sent) * 1000)
        parts["request_transit"].append((s["t_line"] - on_wire) * 1000)
        parts["server_parse"].append((s["t0"] - s["t_line"]) * 1000)
        parts["server_late"].append(s["emitted"][0] * 1000 - ttft_ms)
        parts["response_transit"].append((r.first_text - s["t0"] - s["emitted"][0]) * 1000)
    gaps = [(b - a) * 1000 for s in server.values() for a, b in zip(s["emitted"], s["emitted"][1:], strict=False)]
    return {
        "endpoint": endpoint, "requests": n, "completed": report.completed, "tokens": tokens,
        "ttft_mean": error(report.mean_ttft_ms, ttft_ms),
        "ttft_p50": error(report.median_ttft_ms, ttft_ms),
        "itl_mean": error(report.mean_itl_ms, itl_ms),
        "itl_p50": error(report.median_itl_ms, itl_ms),
        "tpot_mean_ms": round(report.mean_tpot_ms, 3),
        # Where the TTFT error comes from (medians, ms): the client's request path and the response's way
        # back are the generator's share; parsing and lateness are the mock's.
        "ttft_error_breakdown_ms": {k: round(statistics.median(v), 3) for k, v in parts.items() if v},
        "ttft_generator_share_ms": round(
            statistics.median(a + b for a, b in zip(parts["request_transit"], parts["response_transit"], strict=True)), 3
        ) if parts["request_transit"] else None,
        "server_itl_late_mean_ms": round(statistics.fmean(gaps) - itl_ms, 3) if gaps else None,
    }


def rate_sweep(max_lag_ms: float = 5.0) -> list[dict]:
    from vibeserve.bench import BenchConfig, run_benchmark
    from vibeserve.bench.workload import arrival_times

    rows = []
    with MockServer(ttft_ms=5, itl_ms=2, tokens=4) as mock:
        for rate in RATES:
            n = max(50, min(300, rate * 2))
            config = BenchConfig(url=mock.url, rate=rate, num_requests=n, seed=2, input_len=16, output_len=4,
                                 request_timeout=30)
            report = run_benchmark(config)
            schedule = arrival_times(n, rate, "poisson", 2)
            scheduled_rate = (n - 1) / schedule[-1]  # this seed's realized Poisson rate
            achieved = report.achieved_rate or 0.0
            broke = achieved < 0.9 * scheduled_rate or report.send_lag_ms.p99 > max_lag_ms or report.failed > 0
            rows.append({
                "rate": rate, "requests": n, "scheduled_rate": round(scheduled_rate, 2),
                "achieved_rate": round(achieved, 2), "achieved_over_scheduled": round(achieved / scheduled_rate, 3),
                "request_throughput": round(report.request_throughput, 2), "failed": report.failed,
                "send_lag_ms": {k: round(v, 3) for k, v in report.send_lag_ms.model_dump().items()},
                "mean_ttft_ms": round(report.mean_ttft_ms, 3), "broke": broke,
            })  # fmt: skip
            if broke:
                break
    return rows


def guidellm_run(exe: str, processor: str, mock: MockServer, rate: float, n: int, tokens: int) -> dict:
    """One guidellm 0.8 run (Poisson, streaming /v1/completions) against `mock`; its JSON benchmark."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "benchmarks.json"
        cmd = [exe, "run", "--backend", f"kind=openai_http,target={mock.url},model={processor},"
               "request_format=/v1/completions", "--profile", f"kind=poisson,rate={rate}",
               "--constraint", f"kind=max_requests,count={n}",
               "--data", f"kind=synthetic_text,prompt_tokens=32,output_tokens={tokens}",
               "--output", f"kind=json,path={out}", "--disable-console"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"guidellm exited {proc.returncode}: {(proc.stderr or proc.stdout)[-400:]}")
        return json.loads(out.read_text())["benchmarks"][0]


def run_guidellm(exe: str, processor: str | None, ttft_ms: float, itl_ms: float, tokens: int) -> dict | str:
    """guidellm against the same mocks: TTFT/ITL at 10 req/s, dispatch delay (its send lag) at 100 req/s."""
    if not processor:
        return "not run: guidellm needs --guidellm-processor (a local tokenizer folder) for synthetic data"
    try:
        with MockServer(ttft_ms, itl_ms, tokens) as mock:
            latency = guidellm_run(exe, processor, mock, 10, 60, tokens)["metrics"]
        with MockServer(ttft_ms=5, itl_ms=2, tokens=4) as mock:
            at_100 = guidellm_run(exe, processor, mock, 100, 200, 4)
    except (RuntimeError, subprocess.TimeoutExpired, KeyError, IndexError) as e:
        return f"not run: {e}"

    def stat(metrics: dict, name: str, scale: float = 1.0) -> dict:
        m = metrics[name]["successful"]
        return {"mean": m["mean"] * scale, "p50": m["median"] * scale, "p99": m["percentiles"]["p99"] * scale,
                "max": m["max"] * scale}  # fmt: skip

    ttft, itl = stat(latency, "time_to_first_token_ms"), stat(latency, "inter_token_latency_ms")
    # Per request, in seconds; a few requests carry no targeted start and show the epoch time: dropped.
    delays = [r["request_dispatch_delay"] * 1000 for r in at_100["requests"]["successful"]]
    kept = sorted(d for d in delays if 0 <= d < 60_000)
    lag = {"mean": statistics.fmean(kept), "p50": statistics.median(kept), "p99": kept[int(0.99 * (len(kept) - 1))],
           "max": kept[-1], "dropped_without_target": len(delays) - len(kept)} if kept else {}  # fmt: skip
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "version": version,
        "ttft_mean": error(ttft["mean"], ttft_ms), "ttft_p50": error(ttft["p50"], ttft_ms),
        "itl_mean": error(itl["mean"], itl_ms), "itl_p50": error(itl["p50"], itl_ms),
        "rate_100": {"requests": 200, "dispatch_delay_ms": {k: round(v, 3) for k, v in lag.items()},
                     "request_throughput": round(at_100["metrics"]["requests_per_second"]["successful"]["mean"], 2),
                     "duration_s": round(at_100["duration"], 3)},
        "note": "guidellm's TTFT is measured from its request start; its per-token ITL is (last - first token) / "
                "(tokens - 1) per request; dispatch delay = request start minus its targeted start",
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ttft-ms", type=float, default=50)
    ap.add_argument("--itl-ms", type=float, default=10)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--requests", type=int, default=60, help="requests per latency run")
    ap.add_argument("--guidellm", help="a guidellm executable (default: guidellm on PATH)")
    ap.add_argument("--guidellm-processor", help="a local tokenizer folder for guidellm's synthetic data")
    args = ap.parse_args()
    if args.serve:
        return serve(args.serve, args.ttft_ms, args.itl_ms, args.tokens)

    latency = [latency_fidelity(ep, args.ttft_ms, args.itl_ms, args.tokens, args.requests)
               for ep in ("completions", "chat")]
    rates = rate_sweep()
    at_100 = next((r for r in rates if r["rate"] == 100), None)
    exe = args.guidellm or shutil.which("guidellm")
    peers = {"guidellm": run_guidellm(exe, args.guidellm_processor, args.ttft_ms, args.itl_ms, args.tokens) if exe else (
        "not run: no guidellm executable given (--guidellm) or on PATH; guidellm 0.8.1 needs torch (its data "
        "loader imports it), unpinned, which from PyPI resolves to the CUDA build, so it is no project "
        "dependency: install it in a separate venv with a CPU torch and pass --guidellm")}
    last_good = [r["rate"] for r in rates if not r["broke"]]
    print(json.dumps({
        "mock": {"ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms, "tokens": args.tokens, "host": "127.0.0.1"},
        "latency": latency,
        "rates": rates,
        "highest_rate_held": max(last_good) if last_good else None,
        "goals": {
            "ttft_itl_error_under_max_2pct_1ms": all(
                row[k]["within_goal"] for row in latency for k in ("ttft_mean", "ttft_p50", "itl_mean", "itl_p50")),
            "ttft_generator_share_under_1ms": all(
                row["ttft_generator_share_ms"] is not None and row["ttft_generator_share_ms"] < 1.0 for row in latency),
            "p99_send_lag_under_5ms_at_100rps": bool(at_100 and at_100["send_lag_ms"]["p99"] < 5.0),
        },
        "peers": peers,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
