"""The benchmark of smollm2-json-cpu: ``python -m vibeserve.bench`` plus the schema-valid rate.

    python checks/bench.py --report R --responses A -- <vibeserve.bench arguments, without --out/--save-responses>

Runs the load generator (one request at a time over ``checks/requests.jsonl``), then parses every
answer it received and validates it against the schema its request carried (``jsonschema``, formats
checked). The report is the load generator's, plus ``schema_valid_rate`` (valid answers / answers with a
schema) and ``schema_invalid`` (the first few, with why). Anything below 100% counts the invalid answers
as ``failed`` and exits 1, so the benchmark gate fails whatever the latency.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import schema_problem  # noqa: E402  (this directory, set just above)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--responses", required=True, type=Path)
    parser.add_argument("bench_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = [a for a in args.bench_args if a != "--"]
    done = subprocess.run([sys.executable, "-m", "vibeserve.bench", *rest, "--out", str(args.report),
                           "--save-responses", str(args.responses)], check=False)
    if not args.report.is_file() or not args.responses.is_file():
        return done.returncode or 2
    report = json.loads(args.report.read_text())
    rows = [json.loads(line) for line in args.responses.read_text().splitlines() if line.strip()]
    constrained = [r for r in rows if (r.get("extra") or {}).get("response_format")]
    invalid = []
    for r in constrained:
        problem = "the request failed" if not r.get("ok") else schema_problem(r["extra"], r.get("text") or "")
        if problem:
            invalid.append({"index": r.get("index"), "why": problem, "text": (r.get("text") or "")[:200]})
    report["schema_valid_rate"] = 1 - len(invalid) / len(constrained) if constrained else 1.0
    report["schema_invalid"] = invalid[:5]
    if invalid:
        report["failed"] = max(report.get("failed", 0), len(invalid))
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"schema-valid rate: {report['schema_valid_rate']:.1%} of {len(constrained)} answers", file=sys.stderr)
    return 1 if invalid else done.returncode


if __name__ == "__main__":
    sys.exit(main())
