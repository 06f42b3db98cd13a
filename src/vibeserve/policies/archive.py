"""The evolutionary policy's archive: every candidate tried, in tables the policy owns in the run store.

A candidate is one implementer attempt's commit: its parent and inspirations, its framework-measured
metric with the repeats and their spread, the gates' verdicts, the techniques the implementer reported
(its behaviour descriptor, which names its MAP-Elites cell) and, when it failed, the feedback it got.
Also here: the changed-line sets that near-duplicate diffs are recognised by.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vibeserve.gates.objectives import medians
from vibeserve.store import RunStore

TABLES = """
CREATE TABLE IF NOT EXISTS evo_candidates (
    round INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    commit_sha TEXT NOT NULL,
    parent TEXT,                     -- NULL for the baseline
    inspirations TEXT NOT NULL,      -- JSON list of commits shown to the implementer
    status TEXT NOT NULL,            -- passed | failed | refused
    metric REAL,
    samples TEXT NOT NULL,           -- JSON: the benchmark repeats
    spread REAL,
    verdicts TEXT NOT NULL,          -- JSON: [{gate, passed, reason}]
    techniques TEXT,                 -- JSON Descriptor; NULL when never reported
    cell TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    summary TEXT NOT NULL DEFAULT '',
    feedback TEXT NOT NULL DEFAULT '',
    changed_lines TEXT NOT NULL,     -- JSON: normalized changed lines of the diff against the parent
    at REAL NOT NULL,
    objectives TEXT NOT NULL DEFAULT '{}',  -- JSON: each further objective's repeats (after `at`: added later)
    PRIMARY KEY (round, attempt)
);
CREATE TABLE IF NOT EXISTS evo_techniques (    -- report_techniques calls, keyed by the agent call
    call_key TEXT PRIMARY KEY,
    techniques TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS evo_selections (    -- the parent and inspirations chosen for each round
    round INTEGER PRIMARY KEY,
    parent TEXT NOT NULL,
    inspirations TEXT NOT NULL,
    why TEXT NOT NULL
)
"""

Batching = Literal["none", "static", "continuous"]
KvCache = Literal["none", "contiguous", "paged", "prefix-shared"]
Precision = Literal["fp32", "fp16", "bf16", "int8", "int4"]
Decoding = Literal["plain", "speculative"]
Kernels = Literal["eager", "compiled", "custom"]


class Descriptor(BaseModel):
    """What a serving system does, on a few axes that matter for serving: its MAP-Elites cell."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batching: Batching = Field(description="none (one request at a time), static (fixed batches), continuous")
    kv_cache: KvCache = Field(description="none (recompute), contiguous, paged, prefix-shared")
    precision: Precision = Field(description="the weights' and activations' number format")
    decoding: Decoding = Field(description="plain (one token per forward) or speculative")
    kernels: Kernels = Field(description="eager framework ops, compiled graphs (torch.compile...), custom kernels")

    def cell(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.model_dump().items())


UNREPORTED = "unreported"  # the cell of candidates whose techniques nobody reported (the seed, usually)


class Candidate(BaseModel):
    """One archived candidate."""

    model_config = ConfigDict(extra="forbid")

    round: int
    attempt: int
    commit: str
    parent: str | None = None
    inspirations: list[str] = Field(default_factory=list)
    status: Literal["passed", "failed", "refused"]
    metric: float | None = None
    samples: list[float] = Field(default_factory=list)
    spread: float | None = None
    verdicts: list[dict] = Field(default_factory=list)
    techniques: Descriptor | None = None
    title: str = ""
    summary: str = ""
    feedback: str = ""
    changed_lines: list[str] = Field(default_factory=list)
    objectives: dict[str, list[float]] = Field(default_factory=dict)  # [[benchmark.objectives]]: their repeats

    def values(self, primary: str) -> dict[str, float]:
        """Its median on every objective it has a value for; ``primary`` names the ranked metric."""
        return {**medians(self.objectives), **({primary: self.metric} if self.metric is not None else {})}

    @property
    def cell(self) -> str:
        return self.techniques.cell() if self.techniques else UNREPORTED

    @property
    def label(self) -> str:
        return "the baseline" if self.round == 0 else f"round {self.round} attempt {self.attempt}"


# -- near-duplicate diffs -------------------------------------------------------------------------------
def changed_lines(diff: str) -> list[str]:
    """The diff's added and removed lines, whitespace-insensitive (runs collapsed, ends stripped), sorted."""
    out = set()
    for line in diff.splitlines():
        if line.startswith(("+++", "---")) or not line.startswith(("+", "-")):
            continue
        body = " ".join(line[1:].split())
        if body:
            out.add(line[0] + body)
    return sorted(out)


def jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def near_duplicate(lines: list[str], archived: list[Candidate], threshold: float) -> str | None:
    """Why a diff with ``lines`` is a near-duplicate of an archived candidate, or None if it is new."""
    if not lines:
        return "the change is empty (or whitespace only) against its start commit; make a real change"
    for c in archived:
        if not c.changed_lines:
            continue
        similarity = jaccard(lines, c.changed_lines)
        if similarity >= threshold:
            same = "the same change as" if similarity == 1.0 else f"{similarity:.0%} the same changed lines as"
            what = f"it passed with metric {c.metric:.4g}" if c.status == "passed" and c.metric is not None \
                else f"it {c.status}: {c.feedback.strip().splitlines()[0][:200]}" if c.feedback.strip() \
                else f"it {c.status}"
            return (f"this diff is {same} {c.label} (commit {c.commit[:10]}; {what}); try a different idea "
                    f"instead of repeating it (changed lines at least {threshold:.0%} alike count as a repeat)")
    return None


# -- the tables -----------------------------------------------------------------------------------------
class Archive:
    """The evolutionary policy's tables in a ``RunStore``; every write is idempotent."""

    def __init__(self, store: RunStore):
        self.store = store
        store.ensure_tables(TABLES)
        columns = {r["name"] for r in store.conn.execute("PRAGMA table_info(evo_candidates)")}
        if "objectives" not in columns:  # an archive made before objectives: the column is added, empty
            with store.tx() as conn:
                conn.execute("ALTER TABLE evo_candidates ADD COLUMN objectives TEXT NOT NULL DEFAULT '{}'")

    def put(self, c: Candidate) -> None:
        """Record ``c``; recording the same round and attempt again replaces it."""
        with self.store.tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO evo_candidates (round, attempt, commit_sha, parent, inspirations, status, metric,"
                " samples, spread, verdicts, techniques, cell, title, summary, feedback, changed_lines, at, objectives)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (c.round, c.attempt, c.commit, c.parent, json.dumps(c.inspirations), c.status, c.metric,
                 json.dumps(c.samples), c.spread, json.dumps(c.verdicts),
                 c.techniques.model_dump_json() if c.techniques else None, c.cell, c.title, c.summary, c.feedback,
                 json.dumps(c.changed_lines), time.time(), json.dumps(c.objectives)),
            )

    def candidates(self) -> list[Candidate]:
        """Every candidate, in the order tried."""
        rows = self.store.conn.execute("SELECT * FROM evo_candidates ORDER BY round, attempt").fetchall()
        return [Candidate(
            round=r["round"], attempt=r["attempt"], commit=r["commit_sha"], parent=r["parent"],
            inspirations=json.loads(r["inspirations"]), status=r["status"], metric=r["metric"],
            samples=json.loads(r["samples"]), spread=r["spread"], verdicts=json.loads(r["verdicts"]),
            techniques=Descriptor.model_validate_json(r["techniques"]) if r["techniques"] else None,
            title=r["title"], summary=r["summary"], feedback=r["feedback"],
            changed_lines=json.loads(r["changed_lines"]), objectives=json.loads(r["objectives"] or "{}"),
        ) for r in rows]

    def by_commit(self, commit: str) -> Candidate | None:
        return next((c for c in reversed(self.candidates()) if c.commit == commit), None)

    def record_techniques(self, call_key: str, d: Descriptor) -> None:
        with self.store.tx() as conn:
            conn.execute("INSERT OR REPLACE INTO evo_techniques VALUES (?,?,?)",
                         (call_key, d.model_dump_json(), time.time()))

    def techniques_of(self, call_key: str) -> Descriptor | None:
        """What the call ``call_key`` (or its schema retries, ``KEY/tN``) reported last."""
        row = self.store.conn.execute(
            "SELECT techniques FROM evo_techniques WHERE call_key = ? OR call_key LIKE ? ORDER BY at DESC LIMIT 1",
            (call_key, call_key + "/t%"),
        ).fetchone()
        return Descriptor.model_validate_json(row["techniques"]) if row else None

    def record_selection(self, n: int, parent: str, inspirations: list[str], why: str) -> None:
        with self.store.tx() as conn:
            conn.execute("INSERT OR REPLACE INTO evo_selections VALUES (?,?,?,?)",
                         (n, parent, json.dumps(inspirations), why))

    def selection(self, n: int) -> tuple[str, list[str]] | None:
        row = self.store.conn.execute("SELECT * FROM evo_selections WHERE round = ?", (n,)).fetchone()
        return (row["parent"], json.loads(row["inspirations"])) if row else None


def policy_seed(secret_seed: int, name: str) -> int:
    """A seed for ``name``'s random choices, derived from the run's secret seed without revealing it."""
    return int.from_bytes(hashlib.sha256(f"{secret_seed}:{name}".encode()).digest()[:8], "big")
