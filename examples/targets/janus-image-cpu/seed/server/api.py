"""The HTTP layer: /health, /v1/models and an OpenAI-images-like POST /v1/images/generations.

Request: ``{"prompt": str, "n": 1, "response_format": "b64_json"}`` (``model`` and ``size`` are accepted and
ignored; ``n`` must be 1). Response: ``{"created": int, "data": [{"b64_json": <PNG, base64>,
"image_tokens": [<grid tokens, row by row>]}]}``.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler

from .engine import Engine


class BadRequest(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    engine: Engine  # set by make_handler
    model_name: str

    def do_GET(self) -> None:
        if self.path == "/health":
            self._json(200, {"status": "ok"})
        elif self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": 0,
                                                          "owned_by": "vibeserve"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        if self.path != "/v1/images/generations":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
                raise BadRequest("the body must be a JSON object with a string prompt")
            if body.get("n", 1) != 1:
                raise BadRequest("n must be 1")
            if body.get("response_format", "b64_json") != "b64_json":
                raise BadRequest("response_format must be b64_json")
        except (BadRequest, ValueError) as e:
            self._json(400, {"error": {"message": str(e)}})
            return
        tokens = self.engine.generate(body["prompt"])
        self._json(200, {"created": int(time.time()),
                         "data": [{"b64_json": self.engine.png_b64(tokens), "image_tokens": tokens}]})

    def _json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


def make_handler(engine: Engine, model_name: str) -> type[Handler]:
    return type("BoundHandler", (Handler,), {"engine": engine, "model_name": model_name})
