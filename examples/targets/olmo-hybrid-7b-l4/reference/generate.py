"""Reference outputs: HF Transformers, fp32, greedy, one request at a time.

    python reference/generate.py --model artifacts/model --in requests.jsonl --out outputs.jsonl

vibeserve calls this ([reference] in target.toml) for the probe gate and the output audit. Each input line
is a request (see ``hf_greedy.py``); each output line is ``{"id", "text", "token_ids", "finish_reason",
"prompt_tokens"}``, in the same order, one for every input line. Exit 0 on success; 2 on a bad request
(the message names it).

"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import hf_greedy  # this script's directory is on sys.path when it runs as a script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="the checkpoint directory")
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
    ref = hf_greedy.load(args.model)
    lines = []
    for request in requests:
        try:
            lines.append(json.dumps(hf_greedy.generate(ref, request)))
        except (KeyError, TypeError, ValueError) as e:
            print(f"bad request {json.dumps(request)[:300]}: {e}", file=sys.stderr)
            return 2
    args.out.write_text("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
