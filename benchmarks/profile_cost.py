"""What one profile costs: the ``profile`` tool's whole call, end to end, on an example target's seed; and
(``--slowdown``) how much py-spy slows the candidate it samples.

Runs the tool the way an agent does (the real MCP server over stdio, the run's sandbox, py-spy) on the seed
of ``examples/targets/tiny-llama`` (or ``--target smollm2-chat-cpu``), ``--repeats`` times, and prints ONE
JSON object: the wall time of each call, its overhead past the requested load (``wall - seconds``: the
candidate's start in its sandbox, py-spy attaching and writing, the artifacts), the samples taken, the
machine's load average before and after (``/proc/loadavg``; the figures are only as clean as the machine was
quiet), and the summary of the last profile.

    python benchmarks/profile_cost.py [--target tiny-llama|smollm2-chat-cpu] [--seconds 10] [--native]
                                      [--repeats 3] [--sandbox bwrap|none]

``--slowdown`` starts the seed once, in its sandbox, and runs the target's benchmark command on it again and
again, alternating (in a rotated order each repeat) between no profiler and py-spy attached as the tool
attaches it (inside the candidate's namespaces, 100 Hz): plain, ``--native``, and ``--nonblocking`` (what a
profile uses while Nsight Systems records). It prints each mode's throughputs, medians, and the slowdown
against no profiler, both from the medians and as the median of each repeat's paired ratio:

    python benchmarks/profile_cost.py --slowdown [--target tiny-llama] [--repeats 4] [--sandbox bwrap|none]

Figures taken, all on a shared 2-core machine with a load average of 13 to 18 from other work (so upper
bounds, not clean figures): tiny-llama, 10 s of load, 3 calls: 56.4, 60.4, 63.6 s each; SmolLM2, 45 s of
load: 100.1 s (87.7 s with --native). --slowdown on tiny-llama, two runs of 6 repeats, load average 11.6
to 14.3: median paired ratio to no profiler 1.01 with py-spy (0.63 to 1.78: not told from noise), 0.46 with
--native, 0.82 with --nonblocking. The tables and an example summary are in docs/profiling.md.
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

from vibeserve.gates.checks import bench_once
from vibeserve.gates.server import CandidateServer
from vibeserve.harness.mcp_client import McpSession
from vibeserve.jail import candidate_jail
from vibeserve.loop.setup import ensure_artifacts
from vibeserve.profiling.profile_mcp import for_call
from vibeserve.profiling.runner import _start_py_spy, _stop_py_spy, candidate_pid, py_spy
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


MODES = {"none": None, "py-spy": {}, "py-spy --native": {"native": True},
         "py-spy --nonblocking": {"nonblocking": True}}


def slowdown(target, tree: Path, work: Path, jail, repeats: int) -> dict:
    """Benchmark throughput of one running candidate without and with py-spy, alternated."""
    metric = target.spec.benchmark.metric
    logs = work / "slowdown"
    names = list(MODES)
    runs: dict[str, list[float]] = {m: [] for m in names}
    samples: dict[str, list[int]] = {m: [] for m in names}
    with CandidateServer(target, tree, logs, "server", jail=jail) as server:
        pid = candidate_pid(server.proc.pgid, server.argv)
        if pid is None:
            raise SystemExit(f"the candidate's process ({' '.join(server.argv)}) was not found")
        bench_once(target, server, "warmup", logs, (metric,))  # not counted: first requests, caches
        for i in range(repeats):
            for mode in names[i % len(names):] + names[: i % len(names)]:
                opts, name = MODES[mode], f"r{i}-{mode.replace(' ', '').replace('-', '')}"
                spy = None
                if opts is not None:
                    out = logs / name
                    out.mkdir(parents=True)
                    spy, _ = _start_py_spy(py_spy(), pid, out, opts.get("native", False), 100,
                                           nonblocking=opts.get("nonblocking", False))
                try:
                    values, _, _ = bench_once(target, server, name, logs, (metric,))
                finally:
                    if spy is not None:
                        _stop_py_spy(spy)
                runs[mode].append(values[metric])
                if opts is not None:
                    raw = (logs / name / "stacks.txt").read_text()
                    samples[mode].append(sum(int(line.rsplit(" ", 1)[1]) for line in raw.splitlines() if line.strip()))
    base = statistics.median(runs["none"])
    paired = {m: [r / b for r, b in zip(runs[m], runs["none"], strict=True)] for m in names}
    return {"metric": metric, "unit": target.spec.benchmark.unit, "repeats": repeats, "order": "rotated each repeat",
            "modes": {m: {"values": [round(v, 2) for v in runs[m]], "median": round(statistics.median(runs[m]), 2),
                          "spread": round(max(runs[m]) - min(runs[m]), 2),
                          "slowdown_of_medians": round(1 - statistics.median(runs[m]) / base, 3),
                          "slowdown_paired_median": round(1 - statistics.median(paired[m]), 3),
                          "paired_ratios": [round(x, 3) for x in paired[m]],
                          "samples": samples[m]} for m in names}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="tiny-llama", choices=["tiny-llama", "smollm2-chat-cpu"])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--native", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sandbox", default="bwrap", choices=["bwrap", "none"])
    ap.add_argument("--slowdown", action="store_true", help="measure py-spy's slowdown of the candidate instead")
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
    if args.slowdown:
        t0 = time.monotonic()
        result = slowdown(target, tree, work, candidate_jail(sandbox, target, run_dir), args.repeats)
        print(json.dumps({"target": args.target, "sandbox": args.sandbox, "cpus": os.cpu_count(),
                          "loadavg_before": load_before, "loadavg_after": loadavg(),
                          "wall_s": round(time.monotonic() - t0, 1), **result}, indent=1))
        shutil.rmtree(work, ignore_errors=True)
        return 0
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
