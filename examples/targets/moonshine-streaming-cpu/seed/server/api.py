"""The HTTP layer (the protocol is in the target's INSTRUCTIONS.md): streams are opened, fed 16-bit PCM chunks
one request each, and every chunk's response streams its partial transcript as NDJSON, token by token."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import torch

from .engine import FRAME, Engine, Job, Stream

RATE = 16000
SEQ_WAIT_S = 60.0  # how long a chunk waits for the chunks before it to arrive


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def make_handler(engine: Engine):
    streams: dict[str, Stream] = {}
    streams_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, and chunked responses

        def log_message(self, format, *args):  # noqa: A002 -- the base class's name
            pass

        def do_GET(self) -> None:
            if urlsplit(self.path).path == "/health":
                self._json(200, {"status": "ok"})
            else:
                self._json(404, {"error": f"no such path: {self.path}"})

        def do_POST(self) -> None:
            try:
                parts = urlsplit(self.path)
                segments = parts.path.strip("/").split("/")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if segments == ["v1", "streams"]:
                    self._open(body)
                elif len(segments) == 4 and segments[:2] == ["v1", "streams"] and segments[3] == "chunks":
                    self._chunk(segments[2], parse_qs(parts.query), body)
                else:
                    raise BadRequest(404, f"no such path: {parts.path}")
            except BadRequest as e:
                self._json(e.status, {"error": str(e)})

        def do_DELETE(self) -> None:
            segments = urlsplit(self.path).path.strip("/").split("/")
            if len(segments) == 3 and segments[:2] == ["v1", "streams"]:
                with streams_lock:
                    gone = streams.pop(segments[2], None)
                self._json(200 if gone else 404, {"closed": segments[2]} if gone else {"error": "no such stream"})
            else:
                self._json(404, {"error": f"no such path: {self.path}"})

        def _open(self, body: bytes) -> None:
            options = json.loads(body or b"{}")
            if options.get("sample_rate", RATE) != RATE:
                raise BadRequest(400, f"sample_rate must be {RATE}")
            stream_id = uuid.uuid4().hex
            with streams_lock:
                streams[stream_id] = Stream()
            self._json(200, {"stream_id": stream_id})

        def _chunk(self, stream_id: str, query: dict, body: bytes) -> None:
            with streams_lock:
                stream = streams.get(stream_id)
            if stream is None:
                raise BadRequest(404, f"no such stream: {stream_id}")
            try:
                seq = int(query["seq"][0])
                max_tokens = int(query.get("max_tokens", ["8"])[0])
            except (KeyError, ValueError):
                raise BadRequest(400, "seq (and max_tokens, if given) must be integers") from None
            if max_tokens < 1:
                raise BadRequest(400, "max_tokens must be positive")
            if not body or len(body) % (2 * FRAME):
                raise BadRequest(400, f"a chunk must be a positive multiple of {FRAME} 16-bit samples")
            samples = torch.frombuffer(bytearray(body), dtype=torch.int16).to(torch.float32) / 32768.0
            with stream.lock:
                if seq < stream.next_seq:
                    raise BadRequest(409, f"chunk {seq} of this stream was already received")
                if not stream.lock.wait_for(lambda: stream.next_seq == seq, timeout=SEQ_WAIT_S):
                    raise BadRequest(409, f"chunk {seq} came, but chunk {stream.next_seq} never did")
                stream.audio.append(samples)
                stream.next_seq += 1
                chunks = stream.next_seq
                stream.lock.notify_all()
            self._answer(Job(stream, chunks, max_tokens, emit=None))

        def _answer(self, job: Job) -> None:
            import queue

            out: queue.Queue = queue.Queue()
            job.emit = lambda token, finish: out.put((token, finish))
            engine.submit(job)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while True:
                token, finish = out.get()
                if token is not None:
                    self._write_chunk({"token": token})
                    continue
                if finish.startswith("error"):
                    self._write_chunk({"error": finish})
                else:
                    self._write_chunk({"done": True, "finish_reason": finish, "seq": job.chunks - 1})
                break
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _write_chunk(self, obj: dict) -> None:
            data = (json.dumps(obj) + "\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _json(self, status: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
