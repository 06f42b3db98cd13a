"""The reference command: image requests in, Transformers' own image generation out (JSONL both ways).

    python reference/generate.py --model DIR --in requests.jsonl --out outputs.jsonl

Each request ``{"id", "kind": "image", "prompt"}`` gets ``{"id", "image_tokens", "b64_json"}``: the tokens
``JanusForConditionalGeneration.generate(generation_mode="image")`` writes (greedy, guided), and their
decoded image as a base64 PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import janus_ref  # noqa: E402 (after the path it lives on)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--in", dest="inp", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    requests = [json.loads(x) for x in args.inp.read_text().splitlines() if x.strip()]
    for r in requests:
        if r.get("kind") != "image" or not isinstance(r.get("prompt"), str):
            print(f"request {r.get('id')!r} is not an image request with a prompt", file=sys.stderr)
            return 2
    model, tokenizer = janus_ref.load(args.model)
    with args.out.open("w") as out:
        for r in requests:
            tokens = janus_ref.generate(model, janus_ref.prompt_ids(model, tokenizer, r["prompt"]))
            out.write(json.dumps({"id": r["id"], "image_tokens": tokens,
                                  "b64_json": janus_ref.png_b64(model, tokens)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
