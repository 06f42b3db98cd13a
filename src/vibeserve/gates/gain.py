"""When a measured candidate counts as better than the best so far: one rule for both directions.

``improvement(new, ref, direction)`` is a factor: 2.0 means twice as good, whether the metric is a
throughput to maximize (new / ref) or a latency to minimize (ref / new). Ratios make the two directions
symmetric: halving a latency is the same step as doubling a throughput.

A candidate is kept only when its **worst** timed repeat improves on the best's median by at least
``1 + min_gain``. A candidate whose repeats disagree (a cold first run, a noisy neighbour) is judged by
its worst one, so noise can hide a gain but never invent one. Metrics that can be zero or negative
(scores) are compared by their difference relative to ``|ref|`` instead, with the same threshold.
"""

from __future__ import annotations

from collections.abc import Sequence


def improvement(new: float, ref: float, direction: str) -> float:
    """How many times better ``new`` is than ``ref`` (1.0: the same); relative difference + 1 when a value
    is not positive."""
    if new > 0 and ref > 0:
        return new / ref if direction == "max" else ref / new
    if ref == 0:
        better = new > 0 if direction == "max" else new < 0
        return float("inf") if better else (1.0 if new == 0 else 0.0)
    rel = (new - ref) / abs(ref)
    return 1.0 + (rel if direction == "max" else -rel)


def worst(samples: Sequence[float], direction: str) -> float:
    """The least favourable repeat: the lowest throughput, the highest latency."""
    return min(samples) if direction == "max" else max(samples)


def is_gain(samples: Sequence[float], best: float | None, direction: str, min_gain: float) -> bool:
    """Does every timed repeat beat the best's median by at least ``min_gain``? (No best yet: yes.)"""
    if best is None:
        return True
    if not samples:
        return False
    return improvement(worst(samples, direction), best, direction) >= 1.0 + min_gain


def improves(new: float | None, best: float | None, direction: str) -> bool:
    """Is ``new`` strictly better than ``best`` at all (used to move the best ref after a keep)?"""
    if new is None:
        return False
    return best is None or improvement(new, best, direction) > 1.0


def gain_reason(samples: Sequence[float], best: float, direction: str, min_gain: float) -> str:
    """One line on why a passing candidate was not kept."""
    w = worst(samples, direction)
    which = "slowest" if direction == "min" else "lowest"
    return (f"not kept: its {which} repeat ({fmt(w)}) is {fmt_factor(improvement(w, best, direction))} the best's "
            f"median ({fmt(best)}); a keep needs every repeat at least {1 + min_gain:.3g}x better (min_gain)")


def fmt(value: float | None) -> str:
    """A number in plain notation with about four significant digits (12345.6 -> 12346, 0.01234 -> 0.01234)."""
    if value is None:
        return "-"
    if value == 0 or not (1e-4 <= abs(value) < 1e9):
        return f"{value:.4g}"
    digits = max(0, 3 - int(f"{abs(value):e}".split("e")[1]))
    return f"{value:,.{digits}f}".replace(",", "")


def fmt_factor(factor: float) -> str:
    """An improvement factor in words a reader takes in at a glance: ``2.5x better``, ``3.1% worse``."""
    if factor == float("inf"):
        return "infinitely better than"
    if factor >= 1.5:
        return f"{factor:.3g}x better than"
    if factor >= 1.0:
        return f"{(factor - 1) * 100:.3g}% better than"
    if factor > 0 and 1 / factor >= 1.5:
        return f"{1 / factor:.3g}x worse than"
    return f"{(1 - factor) * 100:.3g}% worse than"
