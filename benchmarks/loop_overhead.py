"""The framework's own time per round: round wall time minus agent calls and gate subprocesses.

Runs N rounds of the scripted harness on the toy target (gates take milliseconds) and prints one JSON
object with the median and p90 of the per-round overhead. Goal: under 200 ms per round.

    python benchmarks/loop_overhead.py [--rounds 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from vibeserve.loop.config import RunConfig, create_run
from vibeserve.loop.engine import Engine
from vibeserve.testing.toy_target import make_toy_target, write_trajectory

PASS = {"verdict": "pass", "reasons": "ok", "reward_hacking": False, "criteria_met": True}


def trajectory(root: Path, rounds: int) -> Path:
    calls = []
    for n in range(1, rounds + 1):
        calls.append({"key": f"r{n:03d}/orchestrator", "mcp": [
            {"tool": "create_issue", "arguments": {"title": f"step {n}", "hypothesis": "h",
                                                   "acceptance_criteria": ["c"], "priority": 2}},
            {"tool": "pick_next", "arguments": {"issue_id": n, "start_commit": "best"}},
        ], "reply": {"summary": "pick"}})
        calls.append({"key": f"r{n:03d}/a1/implementer", "files": {"score.txt": f"{1.1 ** n:.4f}\n"},
                      "reply": {"summary": "raise"}})
    calls += [{"key": "r*/a*/judge", "reply": PASS},
              {"key": "r*/a*/evaluator", "reply": {"analysis": "a", "hints": []}}]
    return write_trajectory(root, calls)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--sandbox", choices=["bwrap", "none"], default="bwrap", help="as `vibeserve run --sandbox`")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        target = make_toy_target(root / "toy", rounds=args.rounds)
        traj = trajectory(root / "traj", args.rounds)
        config = RunConfig(run_id="overhead", target=str(target), harness_options={"trajectory": str(traj)},
                           sandbox=args.sandbox)
        run_dir = create_run(root / "runs", config)
        engine = Engine(run_dir)
        t0 = time.monotonic()
        engine.run()
        total = time.monotonic() - t0
        store = engine.store
        per_round = []
        for r in store.rounds():
            if r["round"] == 0:
                continue
            wall = r["finished_at"] - r["started_at"]
            agents = sum(c["wall_s"] for c in store.agent_calls() if c["round"] == r["round"])
            gates = sum(g["wall_s"] for g in store.gates(r["round"]))
            per_round.append({"round": r["round"], "wall_s": wall, "agents_s": agents, "gates_s": gates,
                              "overhead_ms": (wall - agents - gates) * 1000})
        overhead = [p["overhead_ms"] for p in per_round]
        statuses = [r["status"] for r in store.rounds()]
        store.close()
    print(json.dumps({
        "benchmark": "loop_overhead",
        "rounds": args.rounds,
        "sandbox": args.sandbox,
        "statuses": statuses,
        "run_wall_s": round(total, 3),
        "overhead_ms_median": round(statistics.median(overhead), 1),
        "overhead_ms_p90": round(pct(overhead, 0.9), 1),
        "overhead_ms_max": round(max(overhead), 1),
        "goal_ms": 200,
        "per_round": [{k: round(v, 4) if isinstance(v, float) else v for k, v in p.items()} for p in per_round],
        "python": sys.version.split()[0],
    }))


if __name__ == "__main__":
    main()
