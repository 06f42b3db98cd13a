"""The kit's output comparator ([comparator].command) and the scoring the accuracy checker shares.

    python checks/compare.py --model DIR --requests R.jsonl --expected E.jsonl --answers A.jsonl \
        --verdicts V.jsonl --min-agreement 0.45

An image answer (``{"image_tokens": [...], "b64_json": <PNG>}``) passes when

- it holds exactly the grid's number of tokens, each a codebook index;
- **guided agreement**: at least ``--min-agreement`` of its tokens are the reference model's guided argmax
  given the answer's own tokens before them (teacher forcing, ``reference/janus_ref.py``). Greedy image
  generation is autoregressive, so comparing position by position with the reference's tokens would count
  one early departure at every later position; this counts each departure once. An exact server scores
  1.0; a canned image, or another prompt's, scores about what chance gives (a few percent);
- its PNG is the decode of its own tokens (PSNR at least 40 dB against the kit's VQ decode of them), so the
  picture a client sees is the one the tokens describe.

The reference's own tokens (``--expected``) are reported beside each verdict (``exact``: the answer equals
them), not used to decide: an approximate server is not expected to reproduce them.
Writes one verdict line ``{"ok", "score", "required", "detail"}`` per answer; exit 0, or 2 on its own failure.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import sys
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
MIN_IMAGE_PSNR_DB = 40.0


def _reference():
    sys.path.insert(0, str(REFERENCE))
    import janus_ref

    return janus_ref


def score(model, tokenizer, prompt: str, answer: dict, min_agreement: float,
          expected_tokens: list[int] | None = None) -> dict:
    """One answer's verdict: ``{"ok", "score", "required", "detail"}`` (and ``exact`` when the reference's
    tokens are given)."""
    import numpy as np

    ref = _reference()
    size = model.model.vision_model.config.num_image_tokens
    codes = model.config.vq_config.num_embeddings
    tokens = answer.get("image_tokens")
    verdict: dict = {"ok": False, "score": 0.0, "required": min_agreement}
    if expected_tokens is not None:
        verdict["exact"] = tokens == expected_tokens
    if not (isinstance(tokens, list) and len(tokens) == size
            and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < codes for t in tokens)):
        return {**verdict, "detail": f"image_tokens must be {size} codebook indices (0..{codes - 1})"}
    ids = ref.prompt_ids(model, tokenizer, prompt)
    choices = ref.guided_choices(model, ids, tokens)
    agreement = sum(a == b for a, b in zip(choices, tokens, strict=True)) / size
    first = next((i for i, (a, b) in enumerate(zip(choices, tokens, strict=True)) if a != b), None)
    verdict["score"] = round(agreement, 4)
    if agreement < min_agreement:
        return {**verdict, "detail": f"{agreement:.1%} of the image tokens are the guided argmax given the tokens "
                                     f"before them, below {min_agreement:g} (first departure at token {first})"}
    try:
        from PIL import Image

        with Image.open(io.BytesIO(base64.b64decode(answer.get("b64_json") or "", validate=True))) as img:
            got = np.asarray(img.convert("RGB"), dtype=np.float64)
    except Exception as e:
        return {**verdict, "detail": f"b64_json is not a PNG: {type(e).__name__}: {e}"}
    want = ref.pixels(model, tokens).numpy().astype(np.float64)
    if got.shape != want.shape:
        return {**verdict, "detail": f"the image is {got.shape}, the decode of its tokens {want.shape}"}
    mse = float(np.mean((got - want) ** 2))
    db = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    if db < MIN_IMAGE_PSNR_DB:
        return {**verdict, "detail": f"the image is not the decode of its tokens (PSNR {db:.1f} dB)"}
    return {**verdict, "ok": True, "detail": f"guided agreement {agreement:.1%}"}


def declared_min_agreement(target_toml: Path) -> float:
    """The tolerance a target declares: the ``--min-agreement`` of its ``[comparator].command``."""
    import tomllib

    command = tomllib.loads(target_toml.read_text()).get("comparator", {}).get("command", [])
    if "--min-agreement" not in command[:-1]:
        raise ValueError(f"{target_toml}: [comparator].command has no --min-agreement")
    return float(command[command.index("--min-agreement") + 1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("--model", "--requests", "--expected", "--answers", "--verdicts"):
        parser.add_argument(name, required=True)
    parser.add_argument("--min-agreement", type=float, required=True)
    args = parser.parse_args(argv)
    if not 0 < args.min_agreement <= 1:
        print("--min-agreement must be a fraction in (0, 1]", file=sys.stderr)
        return 2

    def rows(path: str) -> list[dict]:
        return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]

    requests, expected, answers = rows(args.requests), rows(args.expected), rows(args.answers)
    if not len(requests) == len(expected) == len(answers):
        print(f"{len(requests)} requests, {len(expected)} reference outputs, {len(answers)} answers", file=sys.stderr)
        return 2
    model, tokenizer = _reference().load(args.model)
    with Path(args.verdicts).open("w") as out:
        for request, exp, answer in zip(requests, expected, answers, strict=True):
            verdict = score(model, tokenizer, request["prompt"], answer, args.min_agreement, exp.get("image_tokens"))
            out.write(json.dumps(verdict) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
