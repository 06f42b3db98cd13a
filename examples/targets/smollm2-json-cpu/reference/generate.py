"""Reference outputs for smollm2-json-cpu: HF Transformers generate, fp32, greedy, under an XGrammar mask.

    python reference/generate.py --model artifacts/model --in requests.jsonl --out outputs.jsonl

Each input line is a request (see ``json_reference.py``); each output line is
``{"id", "text", "token_ids", "finish_reason", "prompt_tokens"}`` in the same order.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import json_reference  # this script's directory is on sys.path when it is run as a script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--in", dest="inp", required=True, type=Path, help="requests, one JSON object a line")
    parser.add_argument("--out", required=True, type=Path, help="outputs, one JSON object a line")
    args = parser.parse_args(argv)

    requests = []
    for n, line in enumerate(args.inp.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            requests.append(json.loads(line))
        except json.JSONDecodeError as e:
            print(f"{args.inp}:{n}: not JSON: {e}", file=sys.stderr)
            return 2
    ref = json_reference.load(args.model)
    lines = []
    for request in requests:
        try:
            lines.append(json.dumps(json_reference.generate(ref, request)))
        except (KeyError, TypeError, ValueError) as e:
            print(f"bad request {request!r}: {e!r}", file=sys.stderr)
            return 2
    args.out.write_text("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
