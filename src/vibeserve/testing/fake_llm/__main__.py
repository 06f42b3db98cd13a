"""``python -m vibeserve.testing.fake_llm --script FILE --port N``: serve a script until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from vibeserve.testing.fake_llm.script import Script
from vibeserve.testing.fake_llm.server import FakeLLM


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vibeserve.testing.fake_llm", description=__doc__)
    parser.add_argument("--script", required=True, help="turn script, .toml or .json")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="fake_llm: %(message)s", stream=sys.stderr)
    try:
        script = Script.load(args.script)
    except (OSError, ValueError) as exc:
        print(f"fake_llm: cannot read the script {args.script}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakeLLM(script, host=args.host, port=args.port) as llm:
        print(f"fake_llm: serving {len(script.turns)} turn(s) at {llm.url}", flush=True)
        stop.wait()
        print(f"fake_llm: {len(llm.requests)} request(s); unconsumed turns: {llm.pending}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
