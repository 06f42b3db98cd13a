"""vibeserve.bench against small in-test OpenAI mock servers on 127.0.0.1: timing, counting, failures, CLI."""

from __future__ import annotations

import json
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vibeserve.bench import BenchConfig, BenchError, run_benchmark
from vibeserve.bench.cli import app as bench_app
from vibeserve.bench.workload import TokenCounter, arrival_times, build_requests, parse_goodput

TEXT = ["Hello,", " world.", " The", " sky", " is", " blue."]  # 6 words by whitespace; more tokens by the tokenizer


class Mock(BaseHTTPRequestHandler):
    """Streams TEXT; the prompt's first word picks a behaviour (ok, role_first, http500, malformed, ...)."""

    protocol_version = "HTTP/1.1"
    state: dict = {}  # set per server: release event, in-flight counter, delay

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        data = json.dumps({"data": [{"id": "mock-model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, obj: object) -> None:
        self._chunk(f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode())

    def _text(self, chat: bool, text: str) -> None:
        self._event({"choices": [{"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat = self.path.endswith("/chat/completions")
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        mode = prompt.split()[0]
        st = self.state
        with st["lock"]:
            st["in_flight"] += 1
            st["max_in_flight"] = max(st["max_in_flight"], st["in_flight"])
            st["bodies"].append(body)
        try:
            self._respond(mode, chat, body)
        finally:
            with st["lock"]:
                st["in_flight"] -= 1

    def _respond(self, mode: str, chat: bool, body: dict) -> None:
        if mode == "hang":
            self.state["release"].wait(10)
            return
        if mode == "http500":
            self.send_response(500)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"boom")
            return
        if not body.get("stream"):
            time.sleep(self.state["delay"])
            text = "".join(TEXT)
            choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            data = json.dumps({"choices": [choice], "usage": {"completion_tokens": 999}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if mode == "role_first":  # a role-only delta and an empty text arrive long before any text
            self._event({"choices": [{"index": 0, "delta": {"role": "assistant"}, "text": ""}]})
            time.sleep(0.3)
        else:
            time.sleep(self.state["delay"])
        if mode == "notext":
            self._event({"choices": [{"index": 0, "delta": {"content": ""}, "text": ""}]})
        else:
            for i, piece in enumerate(TEXT):
                if mode == "malformed" and i == 2:
                    self._chunk(b"data: {not json\n\n")
                if mode == "close" and i == 3:
                    self.close_connection = True
                    return  # no terminating chunk: the connection drops mid-stream
                self._text(chat, piece)
        if mode == "finish_nodone":  # transformers serve's shape: a finish_reason chunk, a clean close, no [DONE]
            self._event({"choices": [{"index": 0, "delta": {}, "text": "", "finish_reason": "length"}]})
        self._event({"choices": [], "usage": {"completion_tokens": 999, "prompt_tokens": 1}})
        if mode not in ("nodone", "finish_nodone"):
            self._event("[DONE]")
        self._chunk(b"")


@pytest.fixture
def mock():
    """A mock server; yields its base URL and shared state."""
    state = {"release": threading.Event(), "lock": threading.Lock(), "in_flight": 0, "max_in_flight": 0,
             "bodies": [], "delay": 0.0}  # fmt: skip
    handler = type("H", (Mock,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    state["release"].set()
    server.shutdown()
    server.server_close()


def dataset(tmp_path: Path, prompts: list[str], key: str = "prompt") -> Path:
    path = tmp_path / "data.jsonl"
    rows = [{"prompt": p} if key == "prompt" else {"messages": [{"role": "user", "content": p}]} for p in prompts]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def bench_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vibeserve.bench", "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_ttft_is_the_first_text_chunk_and_tokens_come_from_text(mock, tmp_path):
    url, state = mock
    data = dataset(tmp_path, ["role_first a", "role_first b", "ok c"], key="messages")
    saved = tmp_path / "responses.jsonl"
    done = []
    report = run_benchmark(BenchConfig(url=url, endpoint="chat", dataset=data, rate=100, arrival="fixed",
                                       save_responses=saved), on_result=done.append)  # fmt: skip
    assert (report.completed, report.failed) == (3, 0)
    assert report.model_id == "mock-model"  # from GET /v1/models
    # Latencies start once the request is on the wire: after sending began, before the first text.
    assert all(r.sent < r.written < r.first_text for r in done)
    rows = [json.loads(line) for line in saved.read_text().splitlines()]
    by_mode = {r["messages"][-1]["content"].split()[0]: r for r in rows}
    assert by_mode["role_first"]["ttft_ms"] >= 290  # the role-only delta at ~0 ms does not count
    assert by_mode["ok"]["ttft_ms"] < by_mode["role_first"]["ttft_ms"]
    assert all(r["text"] == "".join(TEXT) for r in rows)
    # Counted from the text (6 whitespace words each), never the server's usage of 999.
    assert report.total_output_tokens == 18 and report.token_counter == "whitespace"
    assert all(b["temperature"] == 0 and b["stream"] is True and b["max_tokens"] == 64 for b in state["bodies"])
    assert report.mean_itl_ms >= 0 and report.median_tpot_ms > 0


def test_tokens_counted_with_the_target_tokenizer(mock, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "Hello", ",", "world", ".", "The", "sky", "is", "blue"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(tmp_path / "tok")
    url, _ = mock
    report = run_benchmark(BenchConfig(url=url, dataset=dataset(tmp_path, ["ok x"] * 2), tokenizer=tmp_path / "tok"))
    # "Hello, world. The sky is blue." is 9 word-level tokens (punctuation split off), 6 by whitespace.
    assert report.token_counter == "tokenizer"
    assert report.total_output_tokens == 18


@pytest.mark.parametrize("stream", [True, False])
def test_each_failure_mode_is_counted_with_its_reason_and_never_hangs(mock, tmp_path, stream):
    url, _ = mock
    modes = ["ok", "http500", "malformed", "close", "nodone", "notext", "hang", "finish_nodone"]
    # 3 s: room for a loaded 2-core CI machine; the hung request still shows the run never waits longer.
    config = BenchConfig(url=url, dataset=dataset(tmp_path, [f"{m} prompt" for m in modes]), request_timeout=3.0,
                         stream=stream)  # fmt: skip
    t0 = time.monotonic()
    report = run_benchmark(config)
    assert time.monotonic() - t0 < 10
    if stream:
        assert report.completed == 2, report.failures  # "ok", "finish_nodone": every other mode breaks the stream
        assert report.failures == {"http_500": 1, "malformed_sse": 1, "connection_closed": 1, "missing_done": 1,
                                   "no_text": 1, "timeout": 1}  # fmt: skip
    else:  # whole responses: the stream faults do not apply, but errors and timeouts still do
        assert report.failures == {"http_500": 1, "timeout": 1}
    assert report.completed + report.failed == len(modes)


def test_cli_writes_the_report_with_vllm_field_names_and_exits_1_on_failures(mock, tmp_path):
    url, _ = mock
    out = tmp_path / "report.json"
    data = dataset(tmp_path, ["ok a", "ok b", "http500 c"])
    proc = bench_cli("--url", url + "/v1", "--dataset", str(data), "--rate", "50", "--seed", "3", "--out", str(out),
                     "--goodput", "ttft:5000", "tpot:1000", "--json")  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    report = json.loads(out.read_text())
    assert json.loads(proc.stdout) == report
    vllm = {"completed", "total_input_tokens", "total_output_tokens", "duration", "request_throughput",
            "request_goodput", "output_throughput", "total_token_throughput", "max_concurrency", "request_rate"}
    vllm |= {f"{s}_{m}_ms" for s in ("mean", "median", "std", "p90", "p99") for m in ("ttft", "tpot", "itl", "e2el")}
    ours = {"failed", "failures", "offered_rate", "achieved_rate", "send_lag_ms", "seed", "nonce", "token_counter",
            "config"}  # fmt: skip
    assert vllm | ours <= set(report)
    assert (report["completed"], report["failed"], report["failures"]) == (2, 1, {"http_500": 1})
    assert report["request_goodput"] == pytest.approx(report["request_throughput"])  # generous SLOs: all good
    assert report["goodput"] == {"ttft": 5000.0, "tpot": 1000.0}
    assert set(report["send_lag_ms"]) == {"mean", "p50", "p99", "max"}
    assert report["seed"] == 3 and report["nonce"] is True and report["config"]["rate"] == 50


def test_goodput_counts_only_requests_within_the_slo(mock, tmp_path):
    url, state = mock
    state["delay"] = 0.05
    report = run_benchmark(BenchConfig(url=url, dataset=dataset(tmp_path, ["ok a"] * 3), goodput=parse_goodput(["ttft:1"])))
    assert report.completed == 3 and report.request_goodput == 0.0
    with pytest.raises(BenchError):
        parse_goodput(["latency:5"])


def test_unreachable_url_exits_2_naming_it():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}"
    proc = bench_cli("--url", url, "--num-requests", "5", timeout=30)
    assert proc.returncode == 2
    assert url in proc.stderr and "cannot reach" in proc.stderr
    assert bench_cli("--url", url, "--endpoint", "nope").returncode == 2  # usage errors are 2 as well


def test_max_concurrency_caps_in_flight_and_lag_counts_the_wait(mock, tmp_path):
    url, state = mock
    state["delay"] = 0.1
    saved = tmp_path / "r.jsonl"
    report = run_benchmark(BenchConfig(url=url, dataset=dataset(tmp_path, ["ok x"] * 6), rate=float("inf"),
                                       max_concurrency=2, save_responses=saved))  # fmt: skip
    assert report.completed == 6 and state["max_in_flight"] == 2
    assert report.send_lag_ms.max >= 180  # the last pair waited for two rounds of ~100 ms
    lags = sorted(json.loads(line)["send_lag_ms"] for line in saved.read_text().splitlines())
    assert lags[1] < 150 and lags[-1] >= 180


def test_poisson_schedule_is_seeded_with_the_right_mean_rate():
    a, b = arrival_times(4000, 50.0, "poisson", seed=7), arrival_times(4000, 50.0, "poisson", seed=7)
    assert a == b and a != arrival_times(4000, 50.0, "poisson", seed=8)
    gaps = [y - x for x, y in zip(a, a[1:], strict=False)]
    assert 1 / statistics.fmean(gaps) == pytest.approx(50.0, rel=0.06)
    assert statistics.stdev(gaps) == pytest.approx(statistics.fmean(gaps), rel=0.1)  # exponential: sd == mean
    assert arrival_times(5, 10.0, "fixed", 0) == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    assert arrival_times(3, 10.0, "burst", 0) == [0.0] * 3 == arrival_times(3, float("inf"), "poisson", 0)


def test_nonce_makes_prompts_unique_but_keeps_the_shared_prefix():
    counter = TokenCounter()
    config = BenchConfig(url="http://x", num_requests=50, input_len=8, prefix_len=16, seed=5)
    first, second = build_requests(config, counter), build_requests(config, counter)
    prompts = [r.prompt for r in first]
    assert len(set(prompts)) == 50 and not set(prompts) & {r.prompt for r in second}  # unique, and per run
    prefix = " ".join(prompts[0].split()[:16])
    assert all(p.startswith(prefix + " ") for p in prompts)
    assert all(re.search(rf" \[req-5-{i}-[0-9a-f]{{8}}\]$", p) for i, p in enumerate(prompts))
    assert all(r.input_tokens == 16 + 8 + 1 for r in first)
    plain = BenchConfig(url="http://x", num_requests=5, nonce=False, seed=5)
    assert [r.prompt for r in build_requests(plain, counter)] == [r.prompt for r in build_requests(plain, counter)]
    chat = BenchConfig(url="http://x", endpoint="chat", num_requests=3, nonce=True)
    assert all("[req-0-" in r.messages[-1]["content"] for r in build_requests(chat, counter))


def test_sends_on_the_schedule(mock, tmp_path):
    url, _ = mock
    report = run_benchmark(BenchConfig(url=url, dataset=dataset(tmp_path, ["ok a"] * 20), rate=40, arrival="fixed"))
    assert report.completed == 20
    # The schedule's precision is measured in benchmarks/bench_fidelity.py; here, only that it is kept (with
    # room for a busy machine).
    assert report.achieved_rate == pytest.approx(40, rel=0.25)
    assert report.send_lag_ms.p50 < 50


def test_requests_file_sends_each_lines_extra_fields_and_records_them(mock, tmp_path):
    url, state = mock
    rows = [{"messages": [{"role": "user", "content": "ok one"}], "max_tokens": 5,
             "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}},
            {"messages": [{"role": "user", "content": "ok two"}], "stream": False, "model": "mine",
             "prediction": {"type": "content", "content": "def f(): pass"}}]
    data = tmp_path / "requests.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    saved, out = tmp_path / "responses.jsonl", tmp_path / "report.json"
    proc = bench_cli("--url", url, "--endpoint", "chat", "--requests", str(data), "--max-concurrency", "1",
                     "--out", str(out), "--save-responses", str(saved))
    assert proc.returncode == 0, proc.stderr
    bodies = sorted(state["bodies"], key=lambda b: b["messages"][-1]["content"])
    assert bodies[0]["response_format"] == rows[0]["response_format"] and bodies[0]["max_tokens"] == 5
    assert bodies[1]["prediction"] == rows[1]["prediction"] and "response_format" not in bodies[1]
    # The fields the generator owns stay its own: a line cannot turn streaming off or rename the model.
    assert bodies[1]["stream"] is True and bodies[1]["model"] == "mock-model"
    saved_rows = [json.loads(line) for line in saved.read_text().splitlines()]
    assert saved_rows[0]["extra"] == {"response_format": rows[0]["response_format"]}
    assert saved_rows[1]["extra"] == {"prediction": rows[1]["prediction"]}
    report = json.loads(out.read_text())
    assert report["max_concurrency"] == 1 and report["mean_e2el_ms"] > 0  # the one-at-a-time latency metric

    state["bodies"].clear()  # --dataset reads the same file and sends none of the other fields
    assert run_benchmark(BenchConfig(url=url, endpoint="chat", dataset=data)).failed == 0
    assert not any("prediction" in b or "response_format" in b for b in state["bodies"])
    both = CliRunner().invoke(bench_app, ["--url", url, "--dataset", str(data), "--requests", str(data)])
    assert both.exit_code == 2 and "give one" in both.output
