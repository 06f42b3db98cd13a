"""The reference command: streams described in JSONL in, their partial transcripts out.

    python reference/generate.py --model DIR --audio DIR --in requests.jsonl --out outputs.jsonl

Each request: ``{"id": str, "clip": "clip-00.wav", "chunk_ms": 320, "chunks": N, "max_tokens": M}``, with an
optional ``"nonce"`` (the load generator's dither; see `vibeserve.bench.audio.stream_audio`). ``clip`` is a
WAV file in ``--audio`` (or an absolute path); the stream is its first N chunks. Each output line:
``{"id", "partials": [[token ids after chunk 1], ...], "text": the partials as text}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from partials import load_model, partial_transcripts  # noqa: E402

from vibeserve.bench.audio import RATE, read_clip, stream_audio  # noqa: E402


def stream_pcm(audio_dir: Path, request: dict) -> tuple[bytes, list[int]]:
    """The PCM a stream sends and its chunk sizes (samples), as the load generator makes them."""
    chunk = RATE * int(request["chunk_ms"]) // 1000
    samples = read_clip(audio_dir / request["clip"])
    chunks = int(request.get("chunks") or len(samples) // chunk)
    if chunks < 1 or chunks * chunk > len(samples):
        raise ValueError(f"{request['clip']} holds {len(samples) // chunk} chunks of {request['chunk_ms']} ms, "
                         f"not {chunks}")
    return stream_audio(samples[: chunks * chunk], request.get("nonce")), [chunk] * chunks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--audio", required=True, type=Path)
    parser.add_argument("--in", dest="inp", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    model = load_model(args.model)
    with args.out.open("w") as out:
        for line in args.inp.read_text().splitlines():
            if not line.strip():
                continue
            request = json.loads(line)
            pcm, sizes = stream_pcm(args.audio, request)
            partials = partial_transcripts(model, pcm, sizes, int(request.get("max_tokens", 8)))
            text = " | ".join(" ".join(map(str, p)) for p in partials)
            out.write(json.dumps({"id": request.get("id"), "partials": partials, "text": text}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
