"""How many repeats each way telling a real ~4% gain apart from noise needs: paired vs unpaired, on SmolLM2.

A is the SmolLM2 kit's seed server; B is the same seed slowed by 4% (each decoding step is followed by
4% of that step's own CPU time spent spinning), so A is really about 4% faster, and the difference follows whatever
the machine does. Both are started once and stay warm; the kit's own benchmark command measures them
(``--num-requests`` and ``--output-len`` scale it down for a busy machine).

- **paired** (``[benchmark].paired``): pairs alternate A B, B A, ...; after ``n`` pairs, the 95% t-interval
  of the log ratios A/B. The gain is told apart from noise when the interval's lower end is above 1.
- **unpaired** (today's gate): as two rounds measure, B's ``n`` repeats in one block, then A's ``n`` in
  another. Told apart (a) by the gain rule with ``min_gain = 0`` (A's worst repeat above B's median), and
  (b) for a like-for-like interval, when a Welch t-interval of the ratio of geometric means has its lower
  end above 1.

On a machine too busy for SmolLM2 (a run of 8 requests can take minutes), ``--target
examples/targets/tiny-llama`` measures the same thing on the tiny random Llama.

Prints one JSON object: per ``n`` both verdicts and intervals, the smallest ``n`` from which on each tells
the gain (null: not within ``--pairs``), every raw value, and the machine's load while it ran.

    python benchmarks/paired_ab.py [--pairs N] [--num-requests R] [--output-len T] [--target DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from vibeserve.gates.checks import bench_once
from vibeserve.gates.gain import is_gain
from vibeserve.gates.load import LoadMeter
from vibeserve.gates.paired import ratio_interval, t_quantile
from vibeserve.gates.server import CandidateServer
from vibeserve.loop.setup import ensure_artifacts
from vibeserve.target.spec import Target, load_target

REPO = Path(__file__).resolve().parents[1]
STEP = "out = self.model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)"


def slowed_seed(seed: Path, dest: Path, slowdown: float) -> Path:
    """A copy of the seed whose every decoding step then spins for ``slowdown`` times its own CPU time."""
    shutil.copytree(seed, dest, ignore=shutil.ignore_patterns("__pycache__"))
    engine = dest / "server" / "engine.py"
    text = engine.read_text()
    if STEP not in text:
        sys.exit(f"paired_ab: {engine} no longer has the decoding step this script slows down: {STEP}")
    indent = text.split(STEP)[0].rsplit("\n", 1)[1]
    # Extra work, not a sleep: on a busy machine a sleeping thread waits for the CPU long after its sleep
    # ends, which would make the gap far larger than asked. Spinning for ``slowdown`` times the step's own
    # CPU time is real work that the machine slows down like the rest.
    clock = "__import__('time').process_time()"
    slowed = (f"_c0 = {clock}\n{indent}{STEP}\n{indent}_spin = {clock} + ({clock} - _c0) * {slowdown}\n"
              f"{indent}while {clock} < _spin:\n{indent}    pass")
    engine.write_text(text.replace(STEP, slowed))
    return dest


def scaled(target: Target, requests: int, output_len: int) -> Target:
    """The kit's benchmark command with fewer requests and shorter answers (``vibeserve.bench``'s flags, or
    tiny-llama's ``checks/bench.py``'s)."""
    argv = list(target.spec.benchmark.command)
    flags = {"--num-requests": requests, "--output-len": output_len, "--requests": requests, "--max-tokens": output_len}
    found = [f for f in flags if f in argv]
    argv += [x for f in ("--requests", "--max-tokens") if f not in found and "checks/bench.py" in argv
             for x in (f, str(flags[f]))]
    for flag in found:
        argv[argv.index(flag) + 1] = str(flags[flag])
    bench = target.spec.benchmark.model_copy(update={"command": argv})
    return Target(target.root, target.spec.model_copy(update={"benchmark": bench}))


def welch_lower(a: list[float], b: list[float], confidence: float = 0.95) -> float | None:
    """Lower end of a Welch t-interval for exp(mean log a - mean log b); None with fewer than 2 each."""
    if len(a) < 2 or len(b) < 2:
        return None
    la, lb = [math.log(x) for x in a], [math.log(x) for x in b]
    va, vb = statistics.variance(la) / len(la), statistics.variance(lb) / len(lb)
    se = math.sqrt(va + vb)
    if se == 0:
        return math.exp(statistics.fmean(la) - statistics.fmean(lb))
    df = (va + vb) ** 2 / (va ** 2 / (len(la) - 1) + vb ** 2 / (len(lb) - 1))
    return math.exp(statistics.fmean(la) - statistics.fmean(lb) - t_quantile(0.5 + confidence / 2, max(1, int(df))) * se)


def projected(values: dict[str, list[float]], gain: float) -> dict[str, int | None]:
    """Repeats each way a 95% interval would need to exclude 1 for a true ``gain``, at the noise measured:
    paired, from the spread of the log ratios; unpaired, from both blocks' spreads (normal approximation)."""
    if len(values["A"]) < 2 or gain <= 0:
        return {"paired": None, "unpaired": None}
    logs = [math.log(a / b) for a, b in zip(values["A"], values["B"], strict=True)]
    unpaired_var = sum(statistics.variance([math.log(x) for x in values[k]]) for k in ("A_block", "B_block"))
    need = math.log(1 + gain) / 1.96
    return {"paired": math.ceil(statistics.variance(logs) / need ** 2),
            "unpaired": math.ceil(unpaired_var / need ** 2)}


def first_from(flags: list[bool], start: int) -> int | None:
    """The smallest n (counting from ``start``) from which on every flag holds."""
    for i in range(len(flags)):
        if all(flags[i:]):
            return i + start
    return None


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # so that both servers are stopped on the way out


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=Path, default=REPO / "examples" / "targets" / "smollm2-chat-cpu")
    parser.add_argument("--pairs", type=int, default=6, help="repeats each way (and pairs) to measure")
    parser.add_argument("--num-requests", type=int, default=8, help="requests per benchmark run")
    parser.add_argument("--output-len", type=int, default=24, help="tokens per answer")
    parser.add_argument("--slowdown", type=float, default=0.04, help="B's extra CPU time per decoding step")
    args = parser.parse_args()
    target = load_target(args.target)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ensure_artifacts(target, work / "setup")
        target = scaled(target, args.num_requests, args.output_len)
        assert target.seed_dir is not None
        trees = {"A": target.seed_dir, "B": slowed_seed(target.seed_dir, work / "slow", args.slowdown)}
        values: dict[str, list[float]] = {"A": [], "B": [], "A_block": [], "B_block": []}
        metric = target.spec.benchmark.metric
        load_before, t0 = os.getloadavg(), time.monotonic()
        with LoadMeter() as meter, CandidateServer(target, trees["A"], work / "A", "server") as a, \
                CandidateServer(target, trees["B"], work / "B", "server") as b:
            servers = {"A": a, "B": b}
            runs = 0

            def measure(side: str) -> float:
                nonlocal runs
                runs += 1
                return bench_once(target, servers[side], f"run{runs}", work / side, (metric,))[0][metric]

            measure("A"), measure("B")  # warm-up, untimed
            for i in range(args.pairs):  # paired: A B, B A, ...
                for side in ("AB" if i % 2 == 0 else "BA"):
                    values[side].append(measure(side))
            for side in ("B", "A"):  # unpaired: one block each, as two rounds measure
                for _ in range(args.pairs):
                    values[f"{side}_block"].append(measure(side))
    per_n = []
    for n in range(2, args.pairs + 1):
        ratios = [x / y for x, y in zip(values["A"][:n], values["B"][:n], strict=True)]
        geo, lo, hi = ratio_interval(ratios, 0.95)
        a_blk, b_blk = values["A_block"][:n], values["B_block"][:n]
        welch = welch_lower(a_blk, b_blk)
        per_n.append({
            "n": n, "paired_ratio": round(geo, 4), "paired_interval": [round(lo, 4), round(hi, 4)],
            "paired_tells": lo > 1.0,
            "unpaired_ratio_of_medians": round(statistics.median(a_blk) / statistics.median(b_blk), 4),
            "unpaired_gain_rule_tells": is_gain(a_blk, statistics.median(b_blk), "max", 0.0),
            "unpaired_welch_lower": None if welch is None else round(welch, 4),
            "unpaired_welch_tells": welch is not None and welch > 1.0,
        })
    print(json.dumps({
        "target": target.spec.name, "metric": metric, "slowdown_of_B": args.slowdown,
        "bench": {"num_requests": args.num_requests, "output_len": args.output_len},
        "pairs": args.pairs, "wall_s": round(time.monotonic() - t0, 1),
        "repeats_needed": {
            "paired_interval": first_from([r["paired_tells"] for r in per_n], 2),
            "unpaired_gain_rule": first_from([r["unpaired_gain_rule_tells"] for r in per_n], 2),
            "unpaired_welch_interval": first_from([r["unpaired_welch_tells"] for r in per_n], 2),
        },
        "projected_repeats_needed": projected(values, args.slowdown),
        "per_n": per_n,
        "values": {k: [round(x, 3) for x in v] for k, v in values.items()},
        "spread": {k: round((max(v) - min(v)) / statistics.median(v), 4) for k, v in values.items() if v},
        "load": {"loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": os.getloadavg(), "cpus": os.cpu_count(),
                 **meter.report()},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
