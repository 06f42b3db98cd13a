"""What one profile costs: the ``profile`` tool's whole call, end to end, on an example target's seed.

Runs the tool the way an agent does (the real MCP server over stdio, the run's sandbox, py-spy) on the seed
of ``examples/targets/tiny-llama`` (or ``--target smollm2-chat-cpu``), ``--repeats`` times, and prints ONE
JSON object: the wall time of each call, its overhead past the requested load (``wall - seconds``: the
candidate's start in its sandbox, py-spy attaching and writing, the artifacts), the samples taken, the
machine's load average before and after (``/proc/loadavg``; the figures are only as clean as the machine was
quiet), and the summary of the last profile.

    python benchmarks/profile_cost.py [--target tiny-llama|smollm2-chat-cpu] [--seconds 10] [--native]
                                      [--repeats 3] [--sandbox bwrap|none]

Figures taken, all on a shared 2-core machine with a load average of 13 to 18 from other work (so upper
bounds, not clean figures): tiny-llama, 10 s of load, 3 calls: 56.4, 60.4, 63.6 s each; SmolLM2, 45 s of
load: 100.1 s (87.7 s with --native). The table and an example summary are in docs/profiling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from vibeserve.harness.mcp_client import McpSession
from vibeserve.jail import candidate_jail
from vibeserve.loop.setup import ensure_artifacts
from vibeserve.profiling.profile_mcp import for_call
from vibeserve.sandbox import Sandbox
from vibeserve.target.spec import load_target

REPO = Path(__file__).resolve().parents[1]


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


async def call_profile(spec, cwd: Path, log_dir: Path, arguments: dict) -> tuple[float, str, bool]:
    async with McpSession([spec], cwd, log_dir) as mcp:
        t0 = time.monotonic()
        res = await mcp.call("profile", arguments)
        return time.monotonic() - t0, res.text, res.is_error


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="tiny-llama", choices=["tiny-llama", "smollm2-chat-cpu"])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--native", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sandbox", default="bwrap", choices=["bwrap", "none"])
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    target = load_target(REPO / "examples" / "targets" / args.target)
    work = Path(tempfile.mkdtemp(prefix="vibeserve-profile-cost-"))
    ensure_artifacts(target, work / "setup-logs")
    tree = shutil.copytree(target.seed_dir, work / "tree", ignore=shutil.ignore_patterns("__pycache__"))
    run_dir = work / "runs" / "cost"
    run_dir.mkdir(parents=True)
    sandbox = Sandbox.for_run(args.sandbox, run_dir, target.root, target.artifact_paths().values())
    sandbox.check()
    load_before = loadavg()
    calls, summary = [], ""
    for i in range(args.repeats):
        spec = for_call("evaluator", target.root, tree, run_dir / "logs" / f"r{i + 1:03d}" / "a1",
                        run_dir.parent / ".benchmark.lock", sandbox, candidate_jail(sandbox, target, run_dir))
        wall, text, error = anyio.run(call_profile, spec, tree, work / "mcp-logs",
                                      {"seconds": args.seconds, "native": args.native})
        if error:
            print(json.dumps({"error": text}))
            return 1
        meta = json.loads(next((run_dir / "logs" / f"r{i + 1:03d}" / "a1" / "profiles").glob("*/profile.json"))
                          .read_text())
        calls.append({"wall_s": round(wall, 2), "overhead_s": round(wall - args.seconds, 2),
                      "samples": meta["samples"], "load_s": meta["load_s"], "runs": meta["runs"],
                      "parts": meta["parts"]})
        summary = text
    walls = [c["wall_s"] for c in calls]
    print(json.dumps({
        "target": args.target, "sandbox": args.sandbox, "seconds": args.seconds, "native": args.native,
        "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": loadavg(),
        "wall_s_median": round(statistics.median(walls), 2), "wall_s_spread": round(max(walls) - min(walls), 2),
        "calls": calls, "summary": summary, "python": sys.version.split()[0],
    }, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
