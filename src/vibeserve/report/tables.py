"""Typed rows for the report, computed from a run store. Pure reads: nothing here writes to the store.

The run's config JSON (``run.config``) is expected to carry::

    "benchmark": {"metric": str, "direction": "max" | "min", "unit": str}   # the target's [benchmark]
    "peers": [{"name": str, "metric": float}, ...]                          # optional reference systems

A config without ``benchmark`` is read as ``{"metric": "metric", "direction": "max", "unit": ""}`` (with a
warning); a ``direction`` other than max/min, or a malformed peer, is a ``StoreError``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vibeserve.errors import StoreError
from vibeserve.gates.gain import improvement
from vibeserve.gates.objectives import ObjectiveRule, medians, rules_of, values_of
from vibeserve.store import RunStore
from vibeserve.types import GateName, Role, RoundStatus

log = logging.getLogger(__name__)

Direction = Literal["max", "min"]

# The paper's Table 1 order: inner-loop roles first, the orchestrator last.
ROLE_ORDER = (Role.IMPLEMENTER, Role.JUDGE, Role.EVALUATOR, Role.ORCHESTRATOR)
_SHA = re.compile(r"^[0-9a-f]{40}$")
TRACEBACK = "Traceback (most recent call last):"


@dataclass(frozen=True)
class BenchmarkInfo:
    """What the ranked metric is called, which way is better and its unit."""

    metric: str = "metric"
    direction: Direction = "max"
    unit: str = ""
    # [[benchmark.objectives]]: each further objective's name, direction, band and unit, in declared order.
    objectives: tuple[ObjectiveRule, ...] = ()


@dataclass(frozen=True)
class Peer:
    """A reference system's number, drawn as a line on the trajectory."""

    name: str
    metric: float


@dataclass(frozen=True)
class RoleRow:
    """One row of the per-role table (the shape of the paper's Table 1, plus tokens and cost)."""

    role: str
    calls: int
    wall_s: float
    share: float  # of all agent wall time in the run; 0 when no call took any time
    mean_s: float
    tokens_in: int
    tokens_out: int
    cost_usd: float | None  # None when no call of this role reported a cost


@dataclass(frozen=True)
class RoundRow:
    """One round as the report shows it."""

    round: int
    status: str  # kept | accepted | rejected | failed | running
    title: str
    start_commit: str | None  # short form
    candidate: str | None  # short form
    metric: float | None
    vs_baseline: float | None  # improvement factor over the baseline (2.0: twice as good); None for round 0
    vs_best: float | None  # improvement factor over the best before this round
    attempts: int
    reason: str  # one line
    # Each further objective's median over the repeats of the round's passing benchmark (absent: not measured).
    objectives: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class IssueRow:
    """One issue of the issue-tracker backlog."""

    id: int
    title: str
    status: str
    priority: int
    rounds: list[int]


@dataclass(frozen=True)
class CellRow:
    """One MAP-Elites cell of an evolutionary run: what was tried there and its elite."""

    cell: str
    tried: int
    passed: int
    elite_round: int | None
    elite_metric: float | None


@dataclass(frozen=True)
class RunSummary:
    """The headline facts of a run."""

    run_id: str
    target: str
    policy: str
    status: str
    stop_reason: str
    benchmark: BenchmarkInfo
    baseline_metric: float | None
    baseline_commit: str | None
    best_metric: float | None
    best_commit: str | None
    speedup: float | None  # best over baseline, > 1 means better whichever the direction
    sandbox: str  # the run's isolation: "bwrap", or "none" (numbers not protected from the candidates)
    rounds_by_status: dict[str, int]
    cost_usd: float | None  # None when no agent call reported a cost
    wall_s: float
    peers: list[Peer] = field(default_factory=list)

    @property
    def rounds_total(self) -> int:
        return sum(self.rounds_by_status.values())


def short_sha(commit: str | None) -> str | None:
    """A full git sha cut to 8 characters; anything else (a ref name, None) unchanged."""
    if commit and _SHA.match(commit):
        return commit[:8]
    return commit


def speedup(metric: float | None, baseline: float | None, direction: Direction) -> float | None:
    """How many times better ``metric`` is than ``baseline`` (``gates.gain.improvement``); None when unknown."""
    if metric is None or baseline is None or not math.isfinite(metric) or not math.isfinite(baseline):
        return None
    return improvement(metric, baseline, direction)


def one_line(text: str | None, limit: int = 240) -> str:
    """Text as one line for a table or a terminal: a traceback reduced to its last line, cut at ``limit``."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if TRACEBACK in lines:
        lines = [*lines[:lines.index(TRACEBACK)], lines[-1]]
    flat = " ".join(" ".join(lines).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def _config(store: RunStore) -> dict[str, Any]:
    try:
        cfg = json.loads(store.run()["config"])
    except json.JSONDecodeError as e:
        raise StoreError(f"{store.dir / store.FILE}: run.config is not JSON ({e})") from None
    return cfg if isinstance(cfg, dict) else {}


def benchmark_info(store: RunStore) -> BenchmarkInfo:
    """The run's ``config["benchmark"]`` as a ``BenchmarkInfo``."""
    bench = _config(store).get("benchmark")
    if not isinstance(bench, dict):
        log.warning("run config has no benchmark section; reading the metric as 'higher is better'")
        return BenchmarkInfo()
    direction = bench.get("direction", "max")
    if direction not in ("max", "min"):
        raise StoreError(f"{store.dir / store.FILE}: run.config benchmark.direction is {direction!r}; "
                         "expected 'max' or 'min'")
    try:
        further = tuple(rules_of(bench)[1:])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise StoreError(f"{store.dir / store.FILE}: run.config benchmark.objectives is malformed; expected a list "
                         'of {"metric": str, "direction": "max" | "min", "band": number}') from None
    return BenchmarkInfo(metric=str(bench.get("metric") or "metric"), direction=direction,
                         unit=str(bench.get("unit") or ""), objectives=further)


def peers(store: RunStore) -> list[Peer]:
    """The run's ``config["peers"]``: reference systems to draw next to the trajectory."""
    out = []
    for i, p in enumerate(_config(store).get("peers") or []):
        try:
            out.append(Peer(name=str(p["name"]), metric=float(p["metric"])))
        except (KeyError, TypeError, ValueError):
            raise StoreError(f"{store.dir / store.FILE}: run.config peers[{i}] is {p!r}; "
                             'expected {"name": str, "metric": number}') from None
    return out


def role_table(store: RunStore) -> list[RoleRow]:
    """Per-role agent calls, wall time, share of all agent time, mean per call, tokens and cost."""
    rows = store.query(
        "SELECT role, COUNT(*) AS calls, SUM(wall_s) AS wall, SUM(tokens_in) AS tin, SUM(tokens_out) AS tout,"
        " SUM(cost_usd) AS cost FROM agent_calls GROUP BY role"
    )
    total = sum(r["wall"] or 0.0 for r in rows)
    order = {str(r): i for i, r in enumerate(ROLE_ORDER)}
    rows = sorted(rows, key=lambda r: (order.get(r["role"], len(order)), r["role"]))
    return [
        RoleRow(
            role=r["role"], calls=r["calls"], wall_s=r["wall"] or 0.0,
            share=(r["wall"] or 0.0) / total if total > 0 else 0.0,
            mean_s=(r["wall"] or 0.0) / r["calls"], tokens_in=r["tin"] or 0, tokens_out=r["tout"] or 0,
            cost_usd=r["cost"],  # SQL SUM skips NULLs and is NULL when every value is
        )
        for r in rows
    ]


def role_total(rows: list[RoleRow]) -> RoleRow:
    """The "total" row under the per-role table."""
    calls = sum(r.calls for r in rows)
    wall = sum(r.wall_s for r in rows)
    costs = [r.cost_usd for r in rows if r.cost_usd is not None]
    return RoleRow(role="total", calls=calls, wall_s=wall, share=1.0 if wall > 0 else 0.0,
                   mean_s=wall / calls if calls else 0.0, tokens_in=sum(r.tokens_in for r in rows),
                   tokens_out=sum(r.tokens_out for r in rows), cost_usd=sum(costs) if costs else None)


def _loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        v = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return v if isinstance(v, dict) else {}


def _round_reason(store: RunStore, n: int, result: dict[str, Any]) -> str:
    if result.get("reason"):
        return str(result["reason"])
    failed = [g for g in store.gates(n) if not g["passed"]]
    if result.get("status") in (RoundStatus.KEPT, RoundStatus.ACCEPTED):
        # The round's own candidate passed every gate: its reason is the judge's, and a failure of an
        # earlier try is said as such, never as the round's reason.
        said = str(result.get("judge_reasons") or "")
        earlier = [g for g in failed if g["attempt"] < (result.get("attempts") or 0)]
        if earlier:
            tries = ", ".join(f"try {g['attempt']} failed {g['gate']}" for g in earlier)
            said = f"{said} (earlier: {tries})" if said else f"earlier: {tries}"
        return said
    if failed:
        return f"{failed[-1]['gate']}: {failed[-1]['reason']}"
    return str(result.get("judge_reasons") or "")


def round_rows(store: RunStore) -> list[RoundRow]:
    """Every round in order, with its issue title, commits, metric, gain over the baseline and over the best
    before it (as improvement factors), and its reason in one line."""
    bench = benchmark_info(store)
    baseline = store.run()["baseline_metric"]
    issues = {r.id: r.title for r in issue_rows(store)}
    best = baseline
    out = []
    measured = _objective_medians(store, bench) if bench.objectives else {}
    for r in store.rounds():
        task, result = _loads(r["task"]), _loads(r["result"])
        title = str(task.get("title") or "") or issues.get(task.get("issue_id"), "")
        if not title and task.get("brief"):
            title = str(task["brief"]).strip().splitlines()[0][:80]
        metric = r["metric"] if r["metric"] is not None else result.get("metric")
        first = r["round"] == 0
        out.append(RoundRow(
            round=r["round"], status=r["status"], title=one_line(title, 120), start_commit=short_sha(r["start_commit"]),
            candidate=short_sha(r["candidate"]), metric=metric,
            vs_baseline=None if first else speedup(metric, baseline, bench.direction),
            vs_best=None if first else speedup(metric, best, bench.direction),
            attempts=r["attempts"], reason="" if r["status"] == RoundStatus.RUNNING
            else one_line(_round_reason(store, r["round"], result)), objectives=measured.get(r["round"], {}),
        ))
        if (not first and r["status"] == RoundStatus.KEPT and metric is not None
                and (best is None or _better(metric, best, bench.direction))):
            best = metric
    return out


def _objective_medians(store: RunStore, bench: BenchmarkInfo) -> dict[int, dict[str, float]]:
    """Per round, each further objective's median from the round's last passing benchmark gate."""
    out: dict[int, dict[str, float]] = {}
    for g in store.gates():
        if g["gate"] == GateName.BENCHMARK and g["passed"]:
            values = medians(values_of(bench.metric, [], _loads(g["report"])))
            out[g["round"]] = {o.metric: values[o.metric] for o in bench.objectives if o.metric in values}
    return out


def issue_rows(store: RunStore) -> list[IssueRow]:
    """The issue backlog in creation order (empty for policies without one: the issue tracker's table)."""
    if not store.has_table("issues"):
        return []
    return [
        IssueRow(id=r["id"], title=r["title"], status=r["status"], priority=r["priority"],
                 rounds=[int(x) for x in json.loads(r["rounds"] or "[]")])
        for r in store.query("SELECT id, title, status, priority, rounds FROM issues ORDER BY id")
    ]


def cell_rows(store: RunStore, direction: Direction) -> list[CellRow]:
    """The evolutionary archive by cell, best elite first (empty for other policies: its table)."""
    if not store.has_table("evo_candidates"):
        return []
    cells: dict[str, list[Any]] = {}
    for r in store.query("SELECT round, status, metric, cell FROM evo_candidates ORDER BY round, attempt"):
        tried, passed, elite = cells.setdefault(r["cell"], [0, 0, None])[:3]
        better = r["metric"] is not None and (elite is None or _better(r["metric"], elite[1], direction))
        cells[r["cell"]] = [tried + 1, passed + (r["status"] == "passed"),
                            (r["round"], r["metric"]) if r["status"] == "passed" and better else elite]
    rows = [CellRow(cell, tried, passed, *(elite or (None, None))) for cell, (tried, passed, elite) in cells.items()]
    sign = -1 if direction == "max" else 1
    return sorted(rows, key=lambda c: (c.elite_metric is None, sign * (c.elite_metric or 0.0), c.cell))


def _better(a: float, b: float, direction: Direction) -> bool:
    return a > b if direction == "max" else a < b


def run_summary(store: RunStore) -> RunSummary:
    """Run id, target, policy, status, baseline and best (with speedup), rounds per status, cost and wall time."""
    run, bench = store.run(), benchmark_info(store)
    rounds = store.rounds()
    by_status = {str(s): 0 for s in (RoundStatus.KEPT, RoundStatus.ACCEPTED, RoundStatus.REJECTED,
                                     RoundStatus.FAILED, RoundStatus.RUNNING)}
    for r in rounds:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    best, best_commit = run["best_metric"], run["best_commit"]
    if best is None:  # the engine has not written it yet: the best kept round, else the baseline itself
        for r in rounds:
            if r["status"] == RoundStatus.KEPT and r["metric"] is not None and (
                    best is None or _better(r["metric"], best, bench.direction)):
                best, best_commit = r["metric"], r["candidate"]
        if best is None:
            best, best_commit = run["baseline_metric"], run["baseline_commit"]
    cost = store.query("SELECT SUM(cost_usd) FROM agent_calls")[0][0]
    return RunSummary(
        run_id=run["id"], target=Path(run["target"]).name or run["target"], policy=run["policy"], status=run["status"],
        stop_reason=run["stop_reason"], benchmark=bench, baseline_metric=run["baseline_metric"],
        baseline_commit=run["baseline_commit"], best_metric=best, best_commit=best_commit,
        speedup=speedup(best, run["baseline_metric"], bench.direction), sandbox=str(_config(store).get("sandbox", "")),
        rounds_by_status=by_status,
        cost_usd=cost, wall_s=_wall_s(store, run["created_at"], run["finished_at"]), peers=peers(store),
    )


def notices(s: RunSummary) -> list[str]:
    """One-line warnings for the top of a report: a run that was interrupted or failed, numbers taken without
    the sandbox."""
    out = []
    if s.status in ("interrupted", "failed"):
        said = one_line(s.stop_reason) or "no reason recorded"
        out.append(f"run {s.status}: {said}" + (f"; continue with `vibeserve resume {s.run_id}`"
                                                 if s.status == "interrupted" else ""))
    if s.status == "paused":
        out.append(f"run paused at the user's request; continue with `vibeserve resume {s.run_id}`")
    if s.sandbox == "none":
        out.append("measured without the sandbox (sandbox = none): these numbers are not protected from the "
                   "candidates")
    return out


def _wall_s(store: RunStore, created: float, finished: float | None) -> float:
    """Finished runs: start to finish. Others (live, or killed): start to the last thing recorded."""
    if finished is None:
        finished = store.query(
            "SELECT MAX(t) FROM (SELECT MAX(COALESCE(finished_at, started_at)) AS t FROM rounds"
            " UNION ALL SELECT MAX(finished_at) FROM agent_calls)"
        )[0][0]
        if finished is None:
            finished = time.time() if store.run()["status"] == "running" else created
    return max(0.0, finished - created)
