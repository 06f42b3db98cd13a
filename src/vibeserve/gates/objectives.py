"""Several objectives with noise bands: when a candidate is kept, and which points make the Pareto front.

A target ranks by its primary ``[benchmark].metric`` (its band is ``min_gain``) and may add further
``[[benchmark.objectives]]``, each with a direction and a relative noise band. Values are compared as
improvement factors (``gain.improvement``: ratios, so both directions are symmetric).

- ``a`` is **better beyond its band** than ``b`` on an objective when ``improvement(a, b) >= 1 + band``, and
  **worse beyond its band** when ``improvement(a, b) < 1 / (1 + band)``; anything between is *inside the
  band*: neither a gain nor a loss.
- ``a`` **dominates** ``b`` (with bands) when it is better beyond the band on at least one objective and
  worse beyond the band on none. A point inside another's band on every objective does not dominate it.
- A candidate is **kept** when it dominates the best in this sense, judged the way the single-metric gain
  rule judges: the gain must hold for the candidate's *worst* repeat against the best's median, and a loss
  is counted when the candidate's *median* is worse beyond the band (noise can hide a gain, never invent one).

With one objective this is exactly ``gain.is_gain``.
"""

from __future__ import annotations

import statistics
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vibeserve.gates.gain import fmt, fmt_factor, gain_reason, improvement, is_gain, worst


@dataclass(frozen=True)
class ObjectiveRule:
    """One objective: the report field it is read from, which way is better, its relative noise band."""

    metric: str
    direction: str  # max | min
    band: float
    unit: str = ""


def rules_of(benchmark: Mapping[str, Any]) -> list[ObjectiveRule]:
    """The primary metric (band ``min_gain``) then each further objective, from a ``[benchmark]`` table as a
    dict (the target spec dumped, or the run config's ``benchmark``)."""
    out = [ObjectiveRule(str(benchmark.get("metric") or "metric"), str(benchmark.get("direction") or "max"),
                         float(benchmark.get("min_gain", 0.03)), str(benchmark.get("unit") or ""))]
    for o in benchmark.get("objectives") or []:
        out.append(ObjectiveRule(str(o["metric"]), str(o["direction"]), float(o.get("band", 0.05)),
                                 str(o.get("unit") or "")))
    return out


def medians(values: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Each objective's median over its repeats (objectives without repeats left out)."""
    return {k: statistics.median(v) for k, v in values.items() if v}


def beyond(a: float, b: float, rule: ObjectiveRule) -> int:
    """+1 when ``a`` is better than ``b`` beyond the band, -1 when worse beyond it, 0 inside it."""
    factor = improvement(a, b, rule.direction)
    if factor >= 1.0 + rule.band:
        return 1
    if factor < 1.0 / (1.0 + rule.band):
        return -1
    return 0


def dominates(a: Mapping[str, float], b: Mapping[str, float], rules: Sequence[ObjectiveRule]) -> bool:
    """Does ``a`` dominate ``b`` with noise bands? Objectives either point lacks are not compared."""
    signs = [beyond(a[r.metric], b[r.metric], r) for r in rules if r.metric in a and r.metric in b]
    return 1 in signs and -1 not in signs


def keep(values: Mapping[str, Sequence[float]], best: Mapping[str, float] | None,
         rules: Sequence[ObjectiveRule]) -> tuple[bool, str]:
    """Is a candidate with these per-repeat ``values`` kept over the ``best`` medians? And if not, why (one line).

    No best yet: kept. An objective the best has no value for (measured before it was declared) is not compared.
    """
    if best is None:
        return True, ""
    gains, losses = [], []
    for r in rules:
        samples = values.get(r.metric) or []
        if r.metric not in best:
            continue
        if not samples:
            return False, f"not kept: no value for objective {r.metric!r}"
        if beyond(worst(samples, r.direction), best[r.metric], r) > 0:
            gains.append(r.metric)
        median = statistics.median(samples)
        if beyond(median, best[r.metric], r) < 0:
            factor = improvement(median, best[r.metric], r.direction)
            losses.append(f"{r.metric} ({fmt(median)}, {fmt_factor(factor)} the best's {fmt(best[r.metric])}, "
                          f"band {r.band:g})")
    if losses:
        return False, "not kept: worse beyond its noise band on " + "; ".join(losses)
    if not gains:
        return False, ("not kept: no objective's worst repeat is better than the best's median beyond its noise "
                       "band (" + ", ".join(f"{r.metric} {r.band:g}" for r in rules) + ")")
    return True, ""


def pareto_front(points: Mapping[Hashable, Mapping[str, float]], rules: Sequence[ObjectiveRule]) -> list[Hashable]:
    """The keys of the points no other point dominates with noise bands, in the order given."""
    return [k for k, p in points.items()
            if not any(dominates(q, p, rules) for j, q in points.items() if j != k)]


def values_of(metric: str, samples: Sequence[float], report: Mapping[str, Any]) -> dict[str, list[float]]:
    """Every objective's per-repeat values from a benchmark verdict: the primary's samples and the further
    objectives the gate stored in its report under ``objectives``."""
    further = report.get("objectives") if isinstance(report.get("objectives"), dict) else {}
    return {metric: list(samples), **{k: [float(x) for x in v] for k, v in further.items() if isinstance(v, list)}}


def decide(rules: Sequence[ObjectiveRule], values: Mapping[str, Sequence[float]],
           best: Mapping[str, float] | None) -> tuple[bool, str]:
    """Kept or not, and why not: the single-metric gain rule with one objective, ``keep`` with several."""
    if len(rules) == 1:
        r = rules[0]
        ref = None if best is None else best.get(r.metric)
        samples = list(values.get(r.metric) or [])
        if is_gain(samples, ref, r.direction, r.band):
            return True, ""
        return False, gain_reason(samples, ref, r.direction, r.band) if ref is not None and samples else "not kept"
    return keep(values, best, rules)
