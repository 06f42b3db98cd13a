"""The moonshine-streaming-cpu kit's seed and trajectory rounds measured alternately with the kit's own benchmark.

    python benchmarks/streaming_rounds.py [--passes 3] [--target examples/targets/moonshine-streaming-cpu]

The seed and each round (the seed with the trajectory's patches applied in order) are started side by side
(idle servers cost nothing); then each pass runs the kit's `[benchmark]` command (the load and the audit of
every answer) once against every server, in alternating order (seed, round 1, round 2, then round 2, round 1,
seed, ...), so a change in the machine's other load falls on all of them. The 1-minute load average is taken
before every run. Prints one JSON object: each peer's runs (mean and median TTFT, failures, load) and the ratio
of its median mean TTFT to the seed's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from vibeserve.gates import CandidateServer
from vibeserve.target.spec import load_target

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / "examples" / "targets" / "moonshine-streaming-cpu"
PATCHES = REPO / "examples" / "trajectories" / "moonshine-streaming-cpu" / "patches"
ROUNDS = {
    "seed": [],
    "round-1": ["01a-encoder-cache.patch", "01b-recompute-the-lookahead.patch"],
    "round-2": ["01a-encoder-cache.patch", "01b-recompute-the-lookahead.patch", "02-batch-across-streams.patch"],
}


def tree(seed: Path, patches: list[str], dest: Path) -> Path:
    shutil.copytree(seed, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for name in patches:
        subprocess.run(["git", "apply", str(PATCHES / name)], cwd=dest, check=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=Path, default=KIT)
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()
    target = load_target(args.target)
    runs: dict[str, list[dict]] = {name: [] for name in ROUNDS}
    with tempfile.TemporaryDirectory(prefix="vibeserve-rounds-") as tmp, contextlib.ExitStack() as stack:
        servers = {}
        for name, patches in ROUNDS.items():
            workdir = tree(target.path(target.spec.seed), patches, Path(tmp) / name)
            servers[name] = stack.enter_context(CandidateServer(target, workdir, Path(tmp) / f"{name}-logs", "server"))
        for n in range(args.passes):
            order = list(ROUNDS) if n % 2 == 0 else list(reversed(ROUNDS))
            for name in order:
                report = Path(tmp) / f"{name}-{n}.json"
                argv = target.render(target.spec.benchmark.command, url=servers[name].url,
                                     port=servers[name].port, report=report)
                load = os.getloadavg()[0]
                done = subprocess.run(argv, cwd=target.root, capture_output=True, text=True,
                                      timeout=target.spec.benchmark.timeout_s)
                row = {"pass": n, "load_1m": round(load, 2), "exit": done.returncode}
                if report.is_file():
                    r = json.loads(report.read_text())
                    row.update({k: r.get(k) for k in ("mean_ttft_ms", "median_ttft_ms", "p90_ttft_ms", "mean_e2el_ms",
                                                      "failed", "duration", "mean_send_lag_ms")})
                    row["audit"] = {k: r.get("audit", {}).get(k) for k in ("checked", "mismatched")}
                else:
                    row["error"] = done.stderr[-500:]
                runs[name].append(row)
                print(json.dumps({"peer": name, **row}), file=sys.stderr)

    def median(name: str, key: str) -> float | None:
        values = [r[key] for r in runs[name] if r.get(key) is not None and not r.get("failed")]
        return statistics.median(values) if values else None

    seed = median("seed", "mean_ttft_ms")
    print(json.dumps({
        "benchmark": "streaming_rounds", "target": target.spec.name, "load": target.spec.benchmark.command,
        "peers": {name: {"median_mean_ttft_ms": median(name, "mean_ttft_ms"),
                         "median_median_ttft_ms": median(name, "median_ttft_ms"),
                         "mean_ttft_ms_runs": [r.get("mean_ttft_ms") for r in rs],
                         "vs_seed": (seed / m) if seed and (m := median(name, "mean_ttft_ms")) else None,
                         "runs": rs} for name, rs in runs.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
