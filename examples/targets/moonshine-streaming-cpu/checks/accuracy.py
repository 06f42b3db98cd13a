"""The accuracy checker: each case's partial transcripts (token ids after every chunk) must equal the reference's,
streams alone and then all at once.

    python checks/accuracy.py --url URL --model DIR --audio DIR --cases checks/cases.jsonl --report report.json

A case: ``{"id", "clip", "chunk_ms": ms or "chunk_sizes": [samples, ...], "chunks": N, "max_tokens": M}``.
Alone, a stream sends each chunk once the last was answered; together, every stream sends all its chunks at
once. Exit 0 pass, 1 fail (the server's fault), 2 the checker's own error; the report has ``passed``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import traceback
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "reference")]
from partials import load_model, partial_transcripts  # noqa: E402
from streaming_client import compare, run_stream  # noqa: E402

from vibeserve.bench.audio import RATE, read_clip  # noqa: E402


def case_audio(audio_dir: Path, case: dict) -> tuple[bytes, list[int]]:
    samples = read_clip(audio_dir / case["clip"])
    if "chunk_sizes" in case:
        sizes = [int(n) for n in case["chunk_sizes"]]
    else:
        sizes = [RATE * int(case["chunk_ms"]) // 1000] * int(case["chunks"])
    if sum(sizes) > len(samples):
        raise ValueError(f"case {case['id']}: {sum(sizes)} samples asked of {case['clip']}, which has {len(samples)}")
    return samples[: sum(sizes)].tobytes(), sizes


def split(pcm: bytes, sizes: list[int]) -> list[bytes]:
    out, at = [], 0
    for n in sizes:
        out.append(pcm[2 * at: 2 * (at + n)])
        at += n
    return out


async def ask(url: str, streams: list[tuple[list[bytes], int]], together: bool, timeout: float) -> list[list[dict]]:
    limits = httpx.Limits(max_connections=sum(len(c) for c, _ in streams) + len(streams))
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        if together:
            return list(await asyncio.gather(*(run_stream(client, url, c, m, wait_each=False) for c, m in streams)))
        return [await run_stream(client, url, c, m, wait_each=True) for c, m in streams]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--audio", required=True, type=Path)
    parser.add_argument("--cases", required=True, type=Path)
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per chunk request")
    args = parser.parse_args(argv)
    try:
        cases = [json.loads(x) for x in args.cases.read_text().splitlines() if x.strip()]
        model = load_model(args.model)
        audio = [case_audio(args.audio, c) for c in cases]
        expected = [partial_transcripts(model, pcm, sizes, int(c["max_tokens"])) for c, (pcm, sizes) in zip(cases, audio, strict=True)]
        streams = [(split(pcm, sizes), int(c["max_tokens"])) for c, (pcm, sizes) in zip(cases, audio, strict=True)]
    except Exception as e:  # noqa: BLE001 -- the checker's own failure: exit 2, never blame the server
        args.report.write_text(json.dumps({"passed": False, "error": f"{type(e).__name__}: {e}",
                                           "traceback": traceback.format_exc()[-2000:]}))
        print(f"checker error: {e}", file=sys.stderr)
        return 2
    results = []
    for mode in ("alone", "together"):
        answers = asyncio.run(ask(args.url.rstrip("/"), streams, mode == "together", args.timeout))
        for case, want, got in zip(cases, expected, answers, strict=True):
            for k, (w, g) in enumerate(zip(want, got, strict=True)):
                results.append({"id": case["id"], "mode": mode, "chunk": k, **compare(w, g)})
    bad = [r for r in results if r["status"] != "ok"]
    report = {"passed": not bad, "checked": len(results), "failed": len(bad), "cases": results}
    args.report.write_text(json.dumps(report, indent=1))
    print(f"{len(results) - len(bad)} of {len(results)} partial transcripts identical to the reference")
    if bad:
        print(f"first difference: {json.dumps(bad[0])[:400]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
