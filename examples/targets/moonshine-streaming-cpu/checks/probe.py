"""The probe command ([probes] kind = "command"): streams of audio no one has heard before, made from the
round's secret seed, whose partial transcripts must equal the reference's.

    python checks/probe.py --url URL --seed N --model DIR --audio DIR --report report.json

From the seed: three streams, each a random stretch of a random clip at a random gain with seeded noise added,
cut into 2 to 5 chunks of random sizes (multiples of 5 ms, 5 to 640 ms) and a random ``max_tokens`` (1 to 12).
The first two are sent together, each chunk without waiting for the last; the third alone. Exit 0 pass, 1
fail, 2 the probe's own error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import traceback
from array import array
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "reference")]
from partials import FRAME, load_model, partial_transcripts  # noqa: E402
from streaming_client import compare, run_stream  # noqa: E402

from vibeserve.bench.audio import read_clip  # noqa: E402


def make_stream(rng: random.Random, clips: list[Path]) -> tuple[bytes, list[int], int]:
    sizes = [FRAME * rng.randint(1, 128) for _ in range(rng.randint(2, 5))]
    samples = read_clip(rng.choice(clips))  # every clip is longer than 5 x 640 ms
    start = FRAME * rng.randrange(max(1, (len(samples) - sum(sizes)) // FRAME))
    gain = rng.uniform(0.5, 1.5)
    part = samples[start:start + sum(sizes)]
    out = array("h", (max(-32768, min(32767, round(v * gain) + rng.randint(-200, 200))) for v in part))
    return out.tobytes(), sizes, rng.randint(1, 12)


async def ask(url: str, streams: list[tuple[list[bytes], int]], timeout: float) -> list[list[dict]]:
    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=32)) as client:
        first = await asyncio.gather(*(run_stream(client, url, c, m, wait_each=False) for c, m in streams[:2]))
        last = await run_stream(client, url, *streams[2], wait_each=True)
    return [*first, last]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--model", required=True)
    parser.add_argument("--audio", required=True, type=Path)
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    try:
        rng = random.Random(args.seed)
        clips = sorted(args.audio.glob("*.wav"))
        made = [make_stream(rng, clips) for _ in range(3)]
        model = load_model(args.model)
        expected = [partial_transcripts(model, pcm, sizes, m) for pcm, sizes, m in made]
        streams = []
        for pcm, sizes, m in made:
            chunks, at = [], 0
            for n in sizes:
                chunks.append(pcm[2 * at: 2 * (at + n)])
                at += n
            streams.append((chunks, m))
    except Exception as e:  # noqa: BLE001 -- the probe's own failure
        args.report.write_text(json.dumps({"passed": False, "error": f"{type(e).__name__}: {e}",
                                           "traceback": traceback.format_exc()[-2000:]}))
        return 2
    answers = asyncio.run(ask(args.url.rstrip("/"), streams, args.timeout))
    results = [{"stream": i, "chunk": k, "chunk_samples": made[i][1][k], **compare(w, g)}
               for i, (want, got) in enumerate(zip(expected, answers, strict=True))
               for k, (w, g) in enumerate(zip(want, got, strict=True))]
    bad = [r for r in results if r["status"] != "ok"]
    args.report.write_text(json.dumps({"passed": not bad, "checked": len(results), "results": results}, indent=1))
    print(f"{len(results) - len(bad)} of {len(results)} probe partial transcripts identical to the reference")
    if bad:
        print(f"first difference: {json.dumps(bad[0])[:400]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
