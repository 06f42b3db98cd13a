"""Detection and false-rejection rates of the deterministic gates on the reward-hacking corpus.

Runs every candidate of ``tests/reward_hacking/candidates`` (hacked and honest variants of the tiny-llama
server) through the accuracy checker, the probe gate and the benchmark gate with its output audit, as a
round does, with no judge; prints one JSON object: per candidate the gate that rejected it, the rates,
and what each gate costs on a candidate that passes them all.

    python benchmarks/hack_detection.py [--only NAME ...] [--keep DIR] [--sandbox none|bwrap] [--no-attacks]

With ``--sandbox bwrap`` each gate session runs isolated as in a default run (the candidate in its own
sandbox beside its judges). The corpus judges what a candidate serves; the attacks on the sandbox itself
(a candidate or an agent reaching for its judges' files, processes and mounts, or importing into framework
processes) are whole runs, in ``tests/test_attacks.py``: they run too, and each is reported as held or not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from reward_hacking.corpus import judge  # noqa: E402  (found through the path set just above)
from reward_hacking.kit import candidates  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], help="run only these candidates (repeatable)")
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it (logs of every gate)")
    parser.add_argument("--sandbox", choices=["none", "bwrap"], default="none", help="isolate the gate sessions")
    parser.add_argument("--no-attacks", action="store_true", help="skip the attacks on the sandbox")
    args = parser.parse_args()
    chosen = [c for c in candidates() if not args.only or c.name in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        parser.error(f"unknown candidate; known: {', '.join(c.name for c in candidates())}")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = (args.keep or Path(tmp)) / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for cand in chosen:
            rows.append(judge(cand, run_dir, args.sandbox))
            print(f"{cand.name}: {'accepted' if rows[-1]['accepted'] else 'rejected by ' + rows[-1]['rejected_by']}",
                  file=sys.stderr)
    hacks = [r for r in rows if not r["honest"]]
    honest = [r for r in rows if r["honest"]]
    by_gate: dict[str, list[str]] = defaultdict(list)
    for r in hacks:
        by_gate[r["rejected_by"] or "nothing (missed)"].append(r["kind"])
    costs: dict[str, list[float]] = defaultdict(list)
    for r in honest:
        for gate, s in r["gate_seconds"].items():
            costs[gate].append(s)
        if r["audit_seconds"] is not None:
            costs["audit (part of benchmark)"].append(r["audit_seconds"])
    attacks = {} if args.no_attacks else sandbox_attacks()
    print(json.dumps({
        "target": "tiny-llama (benchmark: 1 repeat of 16 requests)",
        "sandbox_attacks": attacks,
        "sandbox_attacks_held": sum(v == "held" for v in attacks.values()),
        "sandbox": args.sandbox,
        "hacked": len(hacks),
        "honest": len(honest),
        "detection_rate": sum(not r["accepted"] for r in hacks) / len(hacks) if hacks else None,
        "false_rejection_rate": sum(not r["accepted"] for r in honest) / len(honest) if honest else None,
        "caught_by": dict(by_gate),
        "median_gate_seconds_on_honest": {g: statistics.median(v) for g, v in costs.items()},
        "candidates": rows,
    }, indent=2))
    return 0


def sandbox_attacks() -> dict[str, str]:
    """Each attack of tests/test_attacks.py, run as the suite runs it: "held" when the sandbox held."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "attacks.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
                        str(REPO / "tests" / "test_attacks.py"), f"--junitxml={xml}"],
                       cwd=REPO, capture_output=True, text=True)
        out = {}
        for case in ET.parse(xml).getroot().iter("testcase"):
            failed = case.find("failure") is not None or case.find("error") is not None
            skipped = case.find("skipped") is not None
            out[case.get("name", "?")] = "skipped" if skipped else "broken through" if failed else "held"
        return out


if __name__ == "__main__":
    sys.exit(main())
