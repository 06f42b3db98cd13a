"""Parallel rounds: candidates per hour with 1, 2, 4 and 8 in flight, and how much agent time hides behind gates.

The evolutionary policy with the scripted harness on the toy target; every implementer call takes a fixed
time (``--agent-s``, a scripted ``sleep_s``), standing for a model API. For each level it reports the
candidates per hour, the mean time a gate queued for its slot in the ``GateScheduler``, and the actual wall
time of the rounds against the ideal one, ``max(gate time, (agent time + gate time) / N)``: the rounds' gate
time cannot shrink (a benchmark runs alone), the rest can be spread over N rounds in flight. Prints one JSON
object. Run it on a quiet machine; ``--ray`` adds the same levels on a local Ray instance.

    python benchmarks/parallel_scaling.py [--rounds 16] [--agent-s 2] [--levels 1,2,4,8] [--ray]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from pathlib import Path

from vibeserve.loop.config import RunConfig, create_run
from vibeserve.loop.engine import Engine
from vibeserve.testing.toy_target import make_toy_target, write_trajectory

PASS = {"verdict": "pass", "reasons": "ok", "reward_hacking": False, "criteria_met": True}


def trajectory(root: Path, rounds: int, agent_s: float) -> Path:
    calls = [{"key": f"r{n:03d}/a1/implementer", "sleep_s": agent_s, "reply": {"summary": f"change {n}"},
              # a different file each round, so no round is refused as a repeat of another
              "files": {"score.txt": f"{1 + n / 100:.4f}\n", f"notes/round{n}.txt": f"{n}\n"}}
             for n in range(1, rounds + 1)]
    calls += [{"key": "r*/a*/judge", "reply": PASS},
              {"key": "r*/a*/evaluator", "reply": {"analysis": "a", "hints": []}}]
    return write_trajectory(root, calls)


def measure(root: Path, name: str, rounds: int, agent_s: float, parallel: int, ray: str | None,
            sandbox: str) -> dict:
    target = make_toy_target(root / name / "toy", rounds=rounds)
    traj = trajectory(root / name / "traj", rounds, agent_s)
    config = RunConfig(run_id=name, target=str(target), policy="evolutionary", harness_options={"trajectory": str(traj)},
                       sandbox=sandbox, parallel=parallel, ray=ray, secret_seed=1)
    run_dir = create_run(root / "runs", config)
    engine = Engine(run_dir)
    try:
        engine.run()
        waits = [r.queued_s for r in engine.scheduler.records]
    finally:
        engine.close()
    conn = sqlite3.connect(run_dir / "run.db")
    try:
        start, end, done = conn.execute(
            "SELECT MIN(started_at), MAX(finished_at), COUNT(*) FROM rounds WHERE round > 0").fetchone()
        gate_s = conn.execute("SELECT COALESCE(SUM(wall_s), 0) FROM gates WHERE round > 0").fetchone()[0]
        agent_s_total = conn.execute("SELECT COALESCE(SUM(wall_s), 0) FROM agent_calls").fetchone()[0]
    finally:
        conn.close()
    wall = end - start
    ideal = max(gate_s, (agent_s_total + gate_s) / parallel)
    return {
        "in_flight": parallel, "pool": "ray" if ray else "local", "rounds": done,
        "candidates_per_hour": round(done / wall * 3600, 1), "wall_s": round(wall, 2),
        "ideal_wall_s": round(ideal, 2), "efficiency": round(ideal / wall, 3),
        "agent_s": round(agent_s_total, 2), "gate_s": round(gate_s, 2),
        "agent_s_hidden": round(max(0.0, agent_s_total + gate_s - wall), 2),
        "mean_gate_queue_wait_s": round(sum(waits) / len(waits), 3) if waits else 0.0,
        "gates": len(waits),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--agent-s", type=float, default=2.0, help="seconds each implementer call takes")
    ap.add_argument("--levels", default="1,2,4,8", help="rounds in flight to measure, comma-separated")
    ap.add_argument("--ray", action="store_true", help="also measure on a local Ray instance")
    ap.add_argument("--sandbox", choices=["bwrap", "none"], default="bwrap", help="as `vibeserve run --sandbox`")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for pool in ["local", *(["ray"] if args.ray else [])]:
            for n in levels:
                results.append(measure(Path(tmp), f"{pool}-{n}", args.rounds, args.agent_s, n,
                                       "local" if pool == "ray" else None, args.sandbox))
                print(f"{pool} x{n}: {results[-1]['candidates_per_hour']} candidates/h", file=sys.stderr)
    print(json.dumps({"benchmark": "parallel_scaling", "rounds": args.rounds, "agent_s": args.agent_s,
                      "sandbox": args.sandbox, "results": results}, indent=2))


if __name__ == "__main__":
    main()
