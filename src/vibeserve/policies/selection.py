"""Parent and inspiration selection over the archive's MAP-Elites cells; deterministic given the rng.

- Only passed candidates (every gate and the judge) are ever parents or inspirations; failed and refused
  ones stay in the archive for their feedback. The baseline counts as passed.
- Each cell (behaviour descriptor) keeps its elite: its best passed candidate (earliest on a tie).
- Parent: an elite drawn with probability softmax(score / temperature), where score is the metric
  normalized by the baseline (metric / baseline for ``max``, baseline / metric for ``min``), so 1.0 is the
  seed and 1.3 is 30% better whatever the unit. Low temperature exploits the best cell, high explores.
- Migration: every ``migrate_every``-th round the parent is the best elite of all cells, and inspirations
  come from other cells before the parent's own, so techniques travel between islands.
- Frontier bias (several objectives, ``[[benchmark.objectives]]``): elites on the archive's Pareto front
  with noise bands (``frontier``) get ``FRONT_BONUS`` added to their score, both when a cell's elite is chosen
  and in the softmax, so trade-offs that nothing beats on every objective are drawn more often than the
  primary metric alone would draw them.
- Inspirations: the best passed candidate (unless it is the parent), then up to ``k`` others at random.
"""

from __future__ import annotations

import math
import random

from vibeserve.gates.objectives import ObjectiveRule, pareto_front
from vibeserve.policies.archive import Candidate

FRONT_BONUS = 0.25  # added to a frontier elite's score: 25% of the baseline, in score units


def score(c: Candidate, baseline: float | None, direction: str) -> float:
    """``c``'s metric normalized by the baseline, larger is better; 0 when it has no metric."""
    if c.metric is None or c.metric <= 0:
        return 0.0
    if baseline is None or baseline <= 0:
        return c.metric if direction == "max" else 1.0 / c.metric
    return c.metric / baseline if direction == "max" else baseline / c.metric


def _best(cands: list[Candidate], baseline: float | None, direction: str,
          front: frozenset[str] = frozenset()) -> Candidate:
    # max() keeps the first of equals: in the order tried, ties go to the older candidate.
    return max(sorted(cands, key=lambda c: (c.round, c.attempt)),
               key=lambda c: score(c, baseline, direction) + (FRONT_BONUS if c.commit in front else 0.0))


def elites(cands: list[Candidate], baseline: float | None, direction: str,
           front: frozenset[str] = frozenset()) -> dict[str, Candidate]:
    """Each cell's best passed candidate (frontier members with ``FRONT_BONUS``), cells in sorted order."""
    cells: dict[str, list[Candidate]] = {}
    for c in cands:
        if c.status == "passed":
            cells.setdefault(c.cell, []).append(c)
    return {cell: _best(cells[cell], baseline, direction, front) for cell in sorted(cells)}


def frontier(cands: list[Candidate], rules: list[ObjectiveRule]) -> list[Candidate]:
    """The passed candidates no other passed candidate dominates with noise bands (``gates.objectives``), in
    the order tried; ``rules[0]`` is the primary metric. A candidate inside another's band on every objective
    is not dominated by it, so both stay on the front."""
    passed = [c for c in cands if c.status == "passed" and c.metric is not None]
    points = {i: c.values(rules[0].metric) for i, c in enumerate(passed)}
    return [passed[i] for i in pareto_front(points, rules)]  # type: ignore[index]


def select_parent(cands: list[Candidate], baseline: float | None, direction: str, temperature: float,
                  rng: random.Random, round_: int, migrate_every: int,
                  front: frozenset[str] = frozenset()) -> tuple[Candidate, str]:
    """The parent for round ``round_`` and one line saying why it was chosen; elites whose commit is in
    ``front`` (the Pareto front, when there are several objectives) get ``FRONT_BONUS``."""
    pool = elites(cands, baseline, direction, front)
    if not pool:
        raise ValueError("the archive holds no passed candidate to start from")
    best = _best(list(pool.values()), baseline, direction, front)
    if migrate_every > 0 and round_ % migrate_every == 0:
        return best, f"migration round (every {migrate_every}): the best of all {len(pool)} cell(s)"
    elite = list(pool.values())
    scores = [score(c, baseline, direction) + (FRONT_BONUS if c.commit in front else 0.0) for c in elite]
    top = max(scores)
    weights = [math.exp((s - top) / temperature) for s in scores]
    draw = rng.random() * sum(weights)
    for c, w in zip(elite, weights, strict=True):
        draw -= w
        if draw < 0:
            chosen = c
            break
    else:
        chosen = elite[-1]
    p = weights[elite.index(chosen)] / sum(weights)
    bias = f", {sum(c.commit in front for c in elite)} on the Pareto front favoured" if front else ""
    return chosen, (f"drawn from {len(pool)} cell elite(s) by softmax at temperature {temperature:g}{bias} "
                    f"(p = {p:.2f})")


def select_inspirations(cands: list[Candidate], parent: Candidate, rng: random.Random, k: int,
                        baseline: float | None, direction: str) -> list[Candidate]:
    """The best passed candidate (if not the parent), then up to ``k`` others, other cells first."""
    passed = [c for c in cands if c.status == "passed" and c.commit != parent.commit]
    if not passed:
        return []
    best = _best(passed, baseline, direction)
    rest = [c for c in passed if c.commit != best.commit]
    other = [c for c in rest if c.cell != parent.cell]
    same = [c for c in rest if c.cell == parent.cell]
    picked = rng.sample(other, min(k, len(other)))
    picked += rng.sample(same, min(k - len(picked), len(same)))
    return [best, *picked]
