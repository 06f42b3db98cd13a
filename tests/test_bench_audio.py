"""vibeserve.bench.audio against a mock streaming server whose delays are known and which records, with the same
clock (perf_counter, CLOCK_MONOTONIC), when each chunk arrived and when each answer line left.

What is checked does not depend on how busy the machine is: the client's interval for a chunk (from starting to
send it to reading its first token) must contain the mock's (from having read it to writing that token), which
is at least the mock's known delay; the clock's due times are exact multiples of the period; the client
never waits for an answer before sending the next chunk (the mock holds each answer until the next chunk of its
stream has arrived, so a client that waited would time out)."""

from __future__ import annotations

import json
import struct
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from vibeserve.bench import audio as bench_audio
from vibeserve.bench.audio import AudioBenchConfig, AudioBenchError, run_audio_benchmark

PERIOD_MS = 100
FIRST_DELAY_S = 0.05  # the mock's wait before an answer's first token
TOKEN_GAP_S = 0.01  # and between its lines


class Mock:
    """A streaming ASR server speaking the protocol, with fixed delays and a log of its own times."""

    def __init__(self, chunks_per_stream: int, hold: bool = True, fail_seq: int | None = None,
                 drop_done_seq: int | None = None):
        self.chunks_per_stream = chunks_per_stream
        self.hold = hold  # answer chunk k only once chunk k+1 of the stream has arrived
        self.fail_seq, self.drop_done_seq = fail_seq, drop_done_seq
        self.lock = threading.Condition()
        self.streams: dict[str, list[dict]] = {}
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._json({"status": "ok"})

            def do_DELETE(self):
                self._json({"closed": True})

            def do_POST(self):
                parts = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received = time.perf_counter()
                if parts.path == "/v1/streams":
                    sid = f"s{len(mock.streams)}"
                    with mock.lock:
                        mock.streams[sid] = []
                    return self._json({"stream_id": sid})
                sid = parts.path.split("/")[3]
                seq = int(parse_qs(parts.query)["seq"][0])
                row = {"seq": seq, "body": body, "received_at": received}
                with mock.lock:
                    mock.streams[sid].append(row)
                    mock.lock.notify_all()
                    if mock.hold and seq + 1 < mock.chunks_per_stream:
                        ok = mock.lock.wait_for(lambda: any(r["seq"] == seq + 1 for r in mock.streams[sid]), 20)
                        row["held_ok"] = ok
                    total = sum(len(r["body"]) for r in mock.streams[sid] if r["seq"] <= seq) // 2
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                time.sleep(FIRST_DELAY_S)
                if seq == mock.fail_seq:
                    self._line({"error": "mock failure"})
                    return self._end()
                for i, token in enumerate((seq, total // 80, 7)):
                    if i:
                        time.sleep(TOKEN_GAP_S)
                    stamp = time.perf_counter()
                    row.setdefault("first_token_at", stamp)
                    self._line({"token": token})
                time.sleep(TOKEN_GAP_S)
                row["done_at"] = time.perf_counter()
                if seq != mock.drop_done_seq:
                    self._line({"done": True, "finish_reason": "length"})
                self._end()

            def _line(self, obj):
                data = (json.dumps(obj) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _end(self):
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _json(self, obj):
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def write_clip(path: Path, seconds: float, phase: int) -> Path:
    n = int(16000 * seconds)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(struct.pack(f"<{n}h", *((i * 37 + phase) % 20000 - 10000 for i in range(n))))
    return path


@pytest.fixture
def clips(tmp_path) -> list[Path]:
    return [write_clip(tmp_path / "a.wav", 0.45, 0), write_clip(tmp_path / "b.wav", 0.5, 999)]


def rows_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_clock_and_latencies_match_the_mocks_own_times(clips, tmp_path):
    saved = tmp_path / "responses.jsonl"
    config = AudioBenchConfig(url="", clips=clips, streams=2, chunk_ms=PERIOD_MS, max_chunks=4, max_tokens=3,
                              nonce=False, request_timeout=15, save_responses=saved)
    with Mock(chunks_per_stream=4) as mock:
        config.url = mock.url
        report = run_audio_benchmark(config)
    assert report["failed"] == 0 and report["completed"] == report["chunks"] == 8, report
    rows = rows_of(saved)
    served = {(int(sid[1:]), r["seq"]): r for sid, rs in mock.streams.items() for r in rs}
    period = PERIOD_MS / 1000
    starts = {}
    for row in rows:
        s, k = row["stream"], row["seq"]
        starts.setdefault(s, row["scheduled_at"] - k * period)
        # The clock: chunk k of stream s is due k periods after the stream's start; streams are staggered by
        # period / streams; nothing is sent before its time.
        assert row["scheduled_at"] == pytest.approx(starts[s] + k * period, abs=1e-9)
        assert row["sent_at"] >= row["scheduled_at"]
        assert row["send_lag_ms"] == pytest.approx((row["sent_at"] - row["scheduled_at"]) * 1000)
        mock_row = served[(s, k)]
        assert mock_row.get("held_ok", True), "the client waited for an answer before sending the next chunk"
        # What the mock saw of this chunk lies inside what the client saw.
        assert row["sent_at"] <= row["written_at"] <= row["first_token_at"] <= row["end_at"]
        assert row["sent_at"] <= mock_row["received_at"]
        assert mock_row["first_token_at"] <= row["first_token_at"]
        assert mock_row["done_at"] <= row["end_at"]
        mock_ttft = mock_row["first_token_at"] - mock_row["received_at"]
        assert mock_ttft >= FIRST_DELAY_S
        assert row["first_token_at"] - row["sent_at"] >= mock_ttft
        assert row["ttft_ms"] == pytest.approx((row["first_token_at"] - row["written_at"]) * 1000)
        assert row["e2el_ms"] >= row["ttft_ms"]
        # Tokens in order, per chunk, and the audio so far as the mock counted it.
        assert row["tokens"] == [k, row["samples"] // 80, 7]
    assert starts[1] - starts[0] == pytest.approx(period / 2, abs=1e-9)
    assert report["mean_ttft_ms"] == pytest.approx(sum(r["ttft_ms"] for r in rows) / len(rows))
    assert report["median_ttft_ms"] >= 0 and report["p99_ttft_ms"] >= report["median_ttft_ms"]


def test_each_chunk_carries_its_slice_of_the_clip_and_a_nonce_changes_only_the_last_bit(clips):
    samples = {c: bench_audio.read_clip(c) for c in clips}
    got = []
    for nonce in (False, True, True):
        config = AudioBenchConfig(url="", clips=clips, streams=2, chunk_ms=PERIOD_MS, max_chunks=4, nonce=nonce,
                                  request_timeout=15)
        with Mock(chunks_per_stream=4, hold=False) as mock:
            config.url = mock.url
            assert run_audio_benchmark(config)["failed"] == 0
        got.append({sid: b"".join(r["body"] for r in sorted(rs, key=lambda r: r["seq"]))
                    for sid, rs in mock.streams.items()})
    order = sorted(clips)
    import random

    random.Random(0).shuffle(order)
    for i, sid in enumerate(sorted(got[0])):
        clip = samples[order[i % len(order)]]
        assert got[0][sid] == clip[: 4 * 1600].tobytes()  # 4 chunks of 100 ms, untouched
        dithered = struct.unpack(f"<{4 * 1600}h", got[1][sid])
        assert max(abs(a - b) for a, b in zip(dithered, clip[: 4 * 1600], strict=True)) == 1
    assert got[1] != got[2], "two runs with a nonce sent the same audio"


@pytest.mark.parametrize(("fail_seq", "drop_done_seq", "reason"), [(1, None, "server_error"),
                                                                    (None, 2, "missing_done")])
def test_a_broken_answer_is_a_failed_chunk_with_its_reason(clips, tmp_path, fail_seq, drop_done_seq, reason):
    out = tmp_path / "report.json"
    with Mock(chunks_per_stream=3, hold=False, fail_seq=fail_seq, drop_done_seq=drop_done_seq) as mock:
        code = bench_audio.main(["--url", mock.url, "--audio", str(clips[0]), "--streams", "1", "--chunk-ms",
                                 str(PERIOD_MS), "--max-chunks", "3", "--out", str(out), "--request-timeout", "15"])
    report = json.loads(out.read_text())
    assert code == 1 and report["failed"] == 1 and report["failures"] == {reason: 1}, report


def test_usage_errors_exit_2_with_a_message(clips, tmp_path, capsys):
    assert bench_audio.main(["--url", "http://127.0.0.1:9", "--audio", str(clips[0])]) == 2
    assert "cannot reach the server" in capsys.readouterr().err
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0" * 6400)
    with pytest.raises(AudioBenchError, match="expected 16-bit mono 16000 Hz"):
        bench_audio.read_clip(stereo)
    assert bench_audio.main(["--url", "http://127.0.0.1:9", "--audio", str(tmp_path / "none")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
