"""Start the server: ``python -m server --port PORT --model DIR`` (target.toml [deliverable].start).

The model is loaded before the socket is bound, so /health answers only once requests can be served.
SIGTERM and SIGINT stop it cleanly with exit status 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

from transformers.utils import logging as hf_logging

from .api import make_handler
from .engine import Engine


class Server(ThreadingHTTPServer):
    request_queue_size = 64
    daemon_threads = True  # a stuck client must not keep the process alive at shutdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="directory with the model and tokenizer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)

    hf_logging.disable_progress_bar()
    engine = Engine(args.model)
    httpd = Server((args.host, args.port), make_handler(engine, Path(args.model).resolve().name))

    def stop(signum, frame):
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"serving {args.model} on http://{args.host}:{args.port}", flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
