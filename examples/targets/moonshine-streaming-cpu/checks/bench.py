"""The benchmark: `vibeserve.bench.audio` (several streams on a fixed clock), then an audit of every answer.

    python checks/bench.py --model DIR --out report.json [--responses FILE] -- [vibeserve.bench.audio flags]

After the load has finished, every chunk's partial transcript is recomputed with the reference, on the exact
audio sent (each stream's nonce dither included), and compared token for token. A chunk that differs counts as
failed (``failed`` above 0 fails the benchmark gate) and the report's ``audit`` says which.

``--responses`` writes one JSON line per stream for the framework's own output audit: the stream as a request
in the reference's input format (``reference_request``: clip, chunk size, chunks, ``max_tokens``, nonce) and
its partial transcripts as the reference writes them (``partials``, ``text``), so the framework recomputes a
sample of the streams of one timed repeat itself, after the server has stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "reference")]
from partials import load_model, partial_transcripts  # noqa: E402

from vibeserve.bench.audio import (  # noqa: E402
    AudioBenchError,
    config_from_args,
    parse_args,
    read_clip,
    run_audio_benchmark,
    stream_audio,
)


def by_stream(rows: list[dict]) -> list[tuple[int, list[dict]]]:
    """The load generator's per-chunk rows grouped by stream, each stream's chunks in order."""
    streams: dict[int, list[dict]] = {}
    for row in rows:
        streams.setdefault(row["stream"], []).append(row)
    return [(stream, sorted(chunks, key=lambda r: r["seq"])) for stream, chunks in sorted(streams.items())]


def audit(model, rows: list[dict]) -> dict:
    checked, bad = 0, []
    for stream, chunks in by_stream(rows):
        total = chunks[-1]["samples"]
        pcm = stream_audio(read_clip(Path(chunks[0]["clip"]))[:total], chunks[0]["nonce"])
        sizes = [c["samples"] - p for c, p in zip(chunks, [0] + [c["samples"] for c in chunks[:-1]], strict=True)]
        want = partial_transcripts(model, pcm, sizes, chunks[0]["max_tokens"])
        for row, expected in zip(chunks, want, strict=True):
            if not row["ok"]:
                continue
            checked += 1
            if row["tokens"] != expected:
                bad.append({"stream": stream, "seq": row["seq"], "expected": expected, "got": row["tokens"]})
    return {"checked": checked, "mismatched": len(bad), "first": bad[:3]}


def stream_rows(rows: list[dict]) -> list[dict]:
    """One row per stream in the framework's audit format: the reference request that reproduces the stream
    (its first ``chunks`` whole chunks, with its dither) and what the server answered after each chunk."""
    out = []
    for stream, chunks in by_stream(rows):
        first = chunks[0]
        partials = [c["tokens"] for c in chunks]
        failed = [c for c in chunks if not c["ok"]]
        out.append({
            "stream": stream,
            "reference_request": {"clip": first["clip"], "chunk_ms": first["chunk_ms"], "chunks": len(chunks),
                                  "max_tokens": first["max_tokens"], "nonce": first["nonce"]},
            "partials": partials, "text": " | ".join(" ".join(map(str, p)) for p in partials),
            "ok": not failed, "error": failed[0]["error"] if failed else None,
        })
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("usage: bench.py --model DIR --out REPORT [--responses FILE] -- [vibeserve.bench.audio flags]", file=sys.stderr)
        return 2
    own, rest = argv[: argv.index("--")], argv[argv.index("--") + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--responses", type=Path, help="one JSON line per stream, for the framework's audit")
    args = parser.parse_args(own)
    bench_args = parse_args(rest)
    with tempfile.TemporaryDirectory() as tmp:
        saved = bench_args.save_responses or Path(tmp) / "responses.jsonl"
        bench_args.save_responses = saved
        try:
            report = run_audio_benchmark(config_from_args(bench_args))
        except AudioBenchError as e:
            print(f"bench.py: {e}", file=sys.stderr)
            return 2
        rows = [json.loads(x) for x in saved.read_text().splitlines() if x.strip()]
    if args.responses is not None:
        args.responses.write_text("".join(json.dumps(r) + "\n" for r in stream_rows(rows)))
    report["audit"] = audit(load_model(args.model), rows)
    report["failed"] += report["audit"]["mismatched"]
    if report["audit"]["mismatched"]:
        report["failures"]["differs_from_reference"] = report["audit"]["mismatched"]
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("chunks", "failed", "mean_ttft_ms", "median_ttft_ms", "duration")}))
    if report["failed"]:
        print(f"{report['failed']} of {report['chunks']} chunks failed: {report['failures']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
