"""A peer for the janus-image-cpu kit: Transformers' own image generation behind the kit's HTTP interface.

    python benchmarks/peer_servers/hf_image.py --model DIR --kit examples/targets/janus-image-cpu --port PORT

Each ``POST /v1/images/generations`` runs ``JanusForConditionalGeneration.generate(generation_mode="image")``
(greedy, classifier-free guidance, a static KV cache), exactly as the kit's reference does
(``reference/janus_ref.py``, imported from ``--kit``), one request at a time; ``GET /v1/models`` is the
ready URL.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--kit", required=True, type=Path)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    sys.path.insert(0, str(args.kit.resolve() / "reference"))
    import janus_ref

    model, tokenizer = janus_ref.load(args.model)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        # a stock server answers without Nagle's delay: the body's write would otherwise wait for the
        # client's delayed ACK of the headers (up to 40 ms)
        disable_nagle_algorithm = True

        def log_message(self, *a) -> None:
            pass

        def _json(self, status: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._json(200, {"object": "list", "data": [{"id": "hf-image", "object": "model"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if self.path != "/v1/images/generations" or not isinstance(body.get("prompt"), str):
                self._json(400, {"error": {"message": "POST /v1/images/generations with a prompt"}})
                return
            with lock:
                tokens = janus_ref.generate(model, janus_ref.prompt_ids(model, tokenizer, body["prompt"]))
                png = janus_ref.png_b64(model, tokens)
            self._json(200, {"created": int(time.time()), "data": [{"b64_json": png, "image_tokens": tokens}]})

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
