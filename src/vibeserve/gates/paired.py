"""Paired measurement (``[benchmark].paired = true``): the candidate and the current best, benchmarked
alternately on the same warm machine, judged by the confidence interval of their ratio.

Both servers are started at once and stay warm for the whole gate; each gets its ``warmup`` runs, then
``repeats`` pairs run one after the other, the candidate first in even pairs and the best first in odd ones
(A B, B A, A B, ...), so a machine that slowly speeds up or slows down favours neither. Background work
that comes and goes slows both members of a pair alike, so the per-pair ratio ``candidate / best`` is far
steadier than either side's numbers.

The interval is a Student-t interval on the logs of the per-pair ratios (two-sided, at ``confidence``):
``exp(mean ± t * sd / sqrt(n))``. It needs no random draw, so it is the same on every replay, and with the
few pairs a gate affords it is wider, not narrower, than a bootstrap's. A candidate is kept when the whole
interval is beyond ``min_gain``: its lower end at least ``1 + min_gain`` for a metric to maximize, its upper
end at most ``1 / (1 + min_gain)`` for one to minimize.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vibeserve.gates.checks import RunFailed, bench_once, evidence
from vibeserve.gates.server import CandidateServer
from vibeserve.target.spec import Target
from vibeserve.types import GateName, GateVerdict

METHOD = "t-interval on log ratios"


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` degrees of freedom, by integrating its density."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:  # 0.5 + the density's integral over [0, x], Simpson's rule
        steps = 400
        h = x / steps
        f = [math.exp(log_c - (df + 1) / 2 * math.log1p((i * h) ** 2 / df)) for i in range(steps + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def ratio_interval(ratios: Sequence[float], confidence: float) -> tuple[float, float, float]:
    """The geometric mean of positive ``ratios`` and its two-sided t-interval at ``confidence`` (at least 2)."""
    logs = [math.log(r) for r in ratios]
    mean = statistics.fmean(logs)
    half = t_quantile(0.5 + confidence / 2, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def summarize_pairs(candidate: Sequence[float], best: Sequence[float], confidence: float) -> dict[str, Any]:
    """The pairs, their ratios ``candidate / best`` and the interval; ``error`` says why there is no interval."""
    out: dict[str, Any] = {"candidate": list(candidate), "best": list(best), "confidence": confidence,
                           "method": METHOD}
    if len(candidate) != len(best) or len(best) < 2:
        return {**out, "error": f"{len(best)} complete pair(s); an interval needs at least 2"}
    if min(*candidate, *best) <= 0:
        return {**out, "error": "a value is not positive, so no ratio of the two could be taken"}
    ratios = [c / b for c, b in zip(candidate, best, strict=True)]
    geo, lo, hi = ratio_interval(ratios, confidence)
    return {**out, "ratios": ratios, "ratio": geo, "interval": [lo, hi]}


def paired_benchmark(target: Target, server: CandidateServer, best: CandidateServer, commit: str,
                     best_commit: str, log_dir: Path) -> GateVerdict:
    """The benchmark gate, paired: see the module docstring. The candidate's own runs are named and stored as
    in the unpaired gate (so the output audit reads them); the best's go to ``log_dir/best``.

    A failing candidate run fails the gate; a failing run of the best (which passed before) only ends the
    pairing: the candidate's remaining repeats run alone and the verdict says why it is not paired.
    """
    spec = target.spec.benchmark
    started, t0 = time.time(), time.monotonic()
    best_dir = log_dir / "best"
    best_dir.mkdir(parents=True, exist_ok=True)
    samples: list[float] = []
    best_samples: list[float] = []
    reports: list[dict[str, Any]] = []
    order: list[str] = []
    argv: list[str] = []
    broken = ""  # why the best stopped taking part

    def verdict(passed: bool, reason: str = "", done: Any = None) -> GateVerdict:
        median = statistics.median(samples) if samples else None
        spread = (max(samples) - min(samples)) / abs(median) if samples and median else None
        paired = summarize_pairs(samples, best_samples, spec.confidence)
        paired.update({"best_commit": best_commit, "order": order, **({"error": broken} if broken else {})})
        return GateVerdict(
            gate=GateName.BENCHMARK, passed=passed, commit=commit, reason=reason, metric=median if passed else None,
            samples=samples, spread=spread, report={"runs": reports, "paired": paired}, command=argv,
            started_at=started, wall_s=time.monotonic() - t0, detail="" if passed else evidence(done, server),
            warnings=[f"paired measurement abandoned: {broken}"] if broken else [],
        )

    def best_run(name: str) -> float | None:
        nonlocal broken
        if broken:
            return None
        try:
            return bench_once(target, best, name, best_dir, (spec.metric,))[0][spec.metric]
        except RunFailed as e:
            broken = f"the best ({best_commit[:10]}) failed a run: {e}"
            return None

    try:
        for i in range(spec.warmup):
            argv = bench_once(target, server, f"bench-warmup{i}", log_dir, (spec.metric,))[2]
            best_run(f"bench-warmup{i}")
        for i in range(spec.repeats):
            first_best = i % 2 == 1
            b = best_run(f"bench{i}") if first_best else None
            values, report, argv = bench_once(target, server, f"bench{i}", log_dir, (spec.metric,))
            if not first_best:
                b = best_run(f"bench{i}")
            samples.append(values[spec.metric])
            reports.append(report)
            if b is not None:
                best_samples.append(b)
                order.append("BA" if first_best else "AB")
    except RunFailed as e:
        return verdict(False, str(e), e.done)
    if broken:
        best_samples.clear()
        order.clear()
    return verdict(True)


def paired_keep(paired: Mapping[str, Any], direction: str, min_gain: float) -> tuple[bool, str]:
    """Kept or not by the paired interval, with a one-line reason either way (the interval is in the reason)."""
    lo, hi = paired["interval"]
    n, conf = len(paired["ratios"]), paired["confidence"]
    said = f"paired over {n} pairs, candidate/best = {paired['ratio']:.4g}, {conf:.0%} interval [{lo:.4g}, {hi:.4g}]"
    if direction == "max":
        need = 1.0 + min_gain
        if lo >= need:
            return True, f"kept: {said}; its lower end clears {need:.4g} (1 + min_gain)"
        return False, f"not kept: {said}; a keep needs its lower end at least {need:.4g} (1 + min_gain)"
    need = 1.0 / (1.0 + min_gain)
    if hi <= need:
        return True, f"kept: {said}; its upper end is below {need:.4g} (1 / (1 + min_gain))"
    return False, f"not kept: {said}; a keep needs its upper end at most {need:.4g} (1 / (1 + min_gain))"


def has_interval(report: Mapping[str, Any]) -> bool:
    """Does a benchmark verdict's report hold a paired interval to decide by?"""
    paired = report.get("paired")
    return isinstance(paired, Mapping) and "interval" in paired and not paired.get("error")
