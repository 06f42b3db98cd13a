"""Several runs side by side: which ones may be compared, each run's headline, its best metric over agent cost
and over wall time, and its per-role table. Pure reads, like ``tables.py``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vibeserve.errors import VibeserveError
from vibeserve.report.tables import ROLE_ORDER, RoleRow, RunSummary, role_table, role_total, run_summary
from vibeserve.store import RunStore
from vibeserve.types import RoundStatus


class NotComparable(VibeserveError):
    """The runs measure different things, so one page cannot rank them."""


@dataclass(frozen=True)
class Point:
    """The best metric as of one moment of a run: after ``cost_usd`` spent on agents and ``wall_s`` elapsed."""

    cost_usd: float
    wall_s: float
    best: float


@dataclass(frozen=True)
class RunColumn:
    """One run of a comparison."""

    summary: RunSummary
    harness: str  # the harness (and model) of every role, or each role's where they differ
    target_path: str
    roles: dict[str, RoleRow]
    total: RoleRow
    curve: list[Point]
    costs_known: bool  # False when no agent call reported a cost (scripted runs, some CLIs)


def harness_of(store: RunStore) -> str:
    """The run's harness as configured: ``codex (gpt-5)``, or per role where a run config set them."""
    cfg = json.loads(store.run()["config"])
    base = str(cfg.get("harness") or "?") + (f" ({cfg['model']})" if cfg.get("model") else "")
    roles = cfg.get("roles") or {}
    extra = [f"{role}: {r.get('harness') or cfg.get('harness')}" + (f" ({r['model']})" if r.get("model") else "")
             for role, r in sorted(roles.items()) if r.get("harness") or r.get("model")]
    return base + (f"; {', '.join(extra)}" if extra else "")


def best_curve(store: RunStore, direction: str) -> list[Point]:
    """The best-so-far metric after each finished round that moved it (the baseline first), with the agent
    cost spent and the wall time elapsed by then."""
    run = store.run()
    created = run["created_at"]
    calls = sorted((r["finished_at"], r["cost_usd"] or 0.0) for r in store.agent_calls())
    out: list[Point] = []
    best: float | None = None
    for r in store.rounds():
        if r["status"] != RoundStatus.KEPT or r["metric"] is None or r["finished_at"] is None:
            continue
        if best is not None and not (r["metric"] > best if direction == "max" else r["metric"] < best):
            continue
        best = r["metric"]
        spent = sum(c for at, c in calls if at <= r["finished_at"])
        out.append(Point(cost_usd=spent, wall_s=max(0.0, r["finished_at"] - created), best=best))
    if out:  # carry the best to the run's last moment
        last = max([r["finished_at"] or r["started_at"] for r in store.rounds()] + [at for at, _ in calls])
        spent = sum(c for _, c in calls)
        if last - created > out[-1].wall_s or spent > out[-1].cost_usd:
            out.append(Point(cost_usd=spent, wall_s=max(0.0, last - created), best=out[-1].best))
    return out


def column(store: RunStore) -> RunColumn:
    summary = run_summary(store)
    roles = role_table(store)
    return RunColumn(
        summary=summary, harness=harness_of(store), target_path=str(Path(store.run()["target"]).resolve()),
        roles={r.role: r for r in roles}, total=role_total(roles),
        curve=best_curve(store, summary.benchmark.direction), costs_known=any(r.cost_usd is not None for r in roles),
    )


def check_comparable(cols: list[RunColumn]) -> list[str]:
    """Refuse runs ranked on different metrics (naming what differs); return notices for what differs but
    still compares (targets that share the metric)."""
    first = cols[0].summary
    for c in cols[1:]:
        s = c.summary
        if (s.benchmark.metric, s.benchmark.direction) != (first.benchmark.metric, first.benchmark.direction):
            def said(x: RunSummary) -> str:
                unit = f" in {x.benchmark.unit}" if x.benchmark.unit else ""
                better = "higher" if x.benchmark.direction == "max" else "lower"
                return f"{x.run_id} ranks {x.benchmark.metric}{unit} ({better} is better) on target {x.target}"
            raise NotComparable(f"these runs cannot share one page: {said(first)}, but {said(s)}; compare runs "
                                "whose targets declare the same [benchmark] metric and direction")
    notes = []
    targets = sorted({c.target_path for c in cols})
    if len(targets) > 1:
        notes.append(f"the runs are on different targets ({', '.join(targets)}); they share the metric "
                     f"{first.benchmark.metric}, so they are compared on it, but their workloads may differ")
    units = sorted({c.summary.benchmark.unit for c in cols})
    if len(units) > 1:
        notes.append(f"the runs give the metric in different units ({', '.join(units)})")
    return notes


def role_names(cols: list[RunColumn]) -> list[str]:
    """The roles any of the runs called, in the per-role table's order."""
    seen = {name for c in cols for name in c.roles}
    order = [str(r) for r in ROLE_ORDER]
    return [r for r in order if r in seen] + sorted(seen - set(order))


def columns(stores: list[RunStore]) -> tuple[list[RunColumn], list[str]]:
    """The runs' columns and the notices for the page's top; ``NotComparable`` when they cannot share one."""
    ids = [s.run()["id"] for s in stores]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise NotComparable(f"run {', '.join(dupes)} is named more than once; name each run once")
    cols = [column(s) for s in stores]
    return cols, check_comparable(cols)
