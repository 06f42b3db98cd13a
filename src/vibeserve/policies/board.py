"""The issue-tracker policy's state: a backlog of issues, the orchestrator's picks and reverts, and memory.md.

Everything lives in the run store, in tables this policy declares (``TABLES``, made with
``RunStore.ensure_tables``), so that the MCP server the agents talk to and the policy in the loop process
see one state, and a resume finds it on disk. ``SNAPSHOT_TABLES`` are saved before each agent call and put
back if the call is re-run, so a call killed half-way does not file its issues twice.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from vibeserve.store.db import RunStore
from vibeserve.store.records import RoundRecord
from vibeserve.types import RoundStatus

IssueStatus = Literal["open", "in_progress", "done", "failed", "dropped"]
ISSUE_STATUSES: tuple[str, ...] = ("open", "in_progress", "done", "failed", "dropped")
PICKABLE = ("open", "in_progress")
# Rounds whose candidate passed every gate; only these (and the baseline) are sound places to start from.
START_ROUND_STATUSES = (str(RoundStatus.KEPT), str(RoundStatus.ACCEPTED))
# Shorter prefixes than git's default abbreviation are too likely to be typos.
MIN_SHA_PREFIX = 7

TABLES = """
CREATE TABLE IF NOT EXISTS issues (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    hypothesis TEXT NOT NULL DEFAULT '',
    acceptance TEXT NOT NULL DEFAULT '[]',
    status TEXT NOT NULL DEFAULT 'open',   -- open | in_progress | done | failed | dropped
    priority INTEGER NOT NULL DEFAULT 2,
    notes TEXT NOT NULL DEFAULT '',
    rounds TEXT NOT NULL DEFAULT '[]',     -- JSON list of round numbers that worked on it
    created_by TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS picks (                 -- what an orchestrator call chose, keyed by that call
    call_key TEXT PRIMARY KEY,
    issue_id INTEGER NOT NULL,
    start_commit TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reverts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_key TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
)
"""
SNAPSHOT_TABLES = ("issues", "picks", "reverts")

Priority = Annotated[int, Field(ge=1, le=3)]
Text = Annotated[str, StringConstraints(strip_whitespace=True)]


class BoardError(ValueError):
    """A request an agent made that the board refuses; the message says what to do instead."""


class Issue(BaseModel):
    """One backlog item as agents see it."""

    id: int
    title: str
    hypothesis: str
    acceptance_criteria: list[str]
    status: IssueStatus
    priority: Priority
    notes: str
    rounds: list[int]
    created_by: str


class NewIssue(BaseModel):
    """The validated input of ``create_issue``."""

    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    hypothesis: Text = ""
    acceptance_criteria: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]] = []
    priority: Priority = 2
    created_by: str = ""


class IssueUpdate(BaseModel):
    """The validated input of ``update_issue``; ``None`` leaves a field as it is."""

    model_config = ConfigDict(extra="forbid")

    status: IssueStatus | None = None
    notes: Text | None = None
    priority: Priority | None = None
    add_round: Annotated[int, Field(ge=0)] | None = None


class Pick(BaseModel):
    """What one orchestrator call chose: the issue and the resolved start commit."""

    call_key: str
    issue_id: int
    start_commit: str


class Revert(BaseModel):
    """A request to move the run back to an earlier commit."""

    id: int
    call_key: str
    commit: str
    reason: str


class Candidate(BaseModel):
    """A commit an agent may start from, with the framework-measured metric."""

    commit: str
    source: Literal["baseline", "round"]
    round: int | None = None
    status: str
    metric: float | None = None
    is_best: bool = False
    title: str = ""


def _explain(e: ValidationError) -> str:
    """Pydantic's errors in one line an agent can act on."""
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "input"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class IssueBoard:
    """Reads and changes the issue-tracker state in a ``RunStore``."""

    def __init__(self, store: RunStore):
        self.store = store
        store.ensure_tables(TABLES)  # a store made before the tables moved here has them already

    # -- issues ---------------------------------------------------------------------------------------
    def list_issues(self, status: str | None = None) -> list[Issue]:
        """All issues in id order, or those with ``status``."""
        if status is None:
            rows = self.store.conn.execute("SELECT * FROM issues ORDER BY id").fetchall()
        else:
            if status not in ISSUE_STATUSES:
                raise BoardError(f"unknown status {status!r}; use one of {', '.join(ISSUE_STATUSES)}")
            rows = self.store.conn.execute("SELECT * FROM issues WHERE status = ? ORDER BY id", (status,)).fetchall()
        return [self._issue(r) for r in rows]

    def get_issue(self, issue_id: int) -> Issue:
        """The issue with ``issue_id``; BoardError if there is none."""
        row = self.store.conn.execute("SELECT * FROM issues WHERE id = ?", (issue_id,)).fetchone()
        if row is None:
            raise BoardError(f"issue {issue_id} does not exist; call list_issues to see the issue ids")
        return self._issue(row)

    def create_issue(
        self,
        title: str,
        hypothesis: str = "",
        acceptance_criteria: list[str] | None = None,
        priority: int = 2,
        created_by: str = "",
    ) -> Issue:
        """Add an open issue and return it with its new id."""
        try:
            new = NewIssue(
                title=title, hypothesis=hypothesis, acceptance_criteria=acceptance_criteria or [],
                priority=priority, created_by=created_by,
            )
        except ValidationError as e:
            raise BoardError(f"invalid issue: {_explain(e)}; priority is 1 (highest) to 3, title non-empty") from None
        with self.store.tx() as c:
            cur = c.execute(
                "INSERT INTO issues (title, hypothesis, acceptance, status, priority, created_by, updated_at)"
                " VALUES (?,?,?,?,?,?,?)",
                (new.title, new.hypothesis, json.dumps(new.acceptance_criteria), "open", new.priority,
                 new.created_by, time.time()),
            )
            issue_id = cur.lastrowid
        assert issue_id is not None
        return self.get_issue(issue_id)

    def update_issue(
        self,
        issue_id: int,
        status: str | None = None,
        notes: str | None = None,
        priority: int | None = None,
        add_round: int | None = None,
    ) -> Issue:
        """Change status or priority, append to the notes, or link a round; return the updated issue."""
        try:
            upd = IssueUpdate(status=status, notes=notes, priority=priority, add_round=add_round)
        except ValidationError as e:
            raise BoardError(
                f"invalid update: {_explain(e)}; status is one of {', '.join(ISSUE_STATUSES)}, priority 1 to 3"
            ) from None
        if upd == IssueUpdate():
            raise BoardError("nothing to update; pass status, notes, priority or add_round")
        issue = self.get_issue(issue_id)
        new_notes = issue.notes
        if upd.notes:
            # Notes are a log: earlier entries stay so later rounds can read why a status changed.
            new_notes = f"{issue.notes}\n{upd.notes}" if issue.notes else upd.notes
        rounds = issue.rounds
        if upd.add_round is not None and upd.add_round not in rounds:
            rounds = sorted([*rounds, upd.add_round])
        with self.store.tx() as c:
            c.execute(
                "UPDATE issues SET status = ?, notes = ?, priority = ?, rounds = ?, updated_at = ? WHERE id = ?",
                (upd.status or issue.status, new_notes, upd.priority or issue.priority, json.dumps(rounds),
                 time.time(), issue_id),
            )
        return self.get_issue(issue_id)

    # -- picks and reverts ----------------------------------------------------------------------------
    def pick_next(self, call_key: str, issue_id: int, start_commit: str = "best") -> Pick:
        """Record that the call ``call_key`` chose ``issue_id`` starting from ``start_commit``."""
        issue = self.get_issue(issue_id)
        if issue.status not in PICKABLE:
            raise BoardError(
                f"issue {issue_id} is {issue.status}; pick an open or in_progress issue "
                "(list_issues with status 'open'), or reopen it with update_issue"
            )
        sha = self.resolve_commit(start_commit)
        previous = self.pick_for(call_key)
        with self.store.tx() as c:
            if previous is not None and previous[0] != issue_id:
                # A changed mind within one call: an issue no round has touched goes back to the backlog.
                c.execute(
                    "UPDATE issues SET status = 'open', updated_at = ? "
                    "WHERE id = ? AND status = 'in_progress' AND rounds = '[]'",
                    (time.time(), previous[0]),
                )
            c.execute(
                "INSERT OR REPLACE INTO picks (call_key, issue_id, start_commit, at) VALUES (?,?,?,?)",
                (call_key, issue_id, sha, time.time()),
            )
            c.execute("UPDATE issues SET status = 'in_progress', updated_at = ? WHERE id = ?", (time.time(), issue_id))
        return Pick(call_key=call_key, issue_id=issue_id, start_commit=sha)

    def pick_for(self, call_key: str) -> tuple[int, str] | None:
        """The (issue id, start sha) the call chose, or None if it picked nothing."""
        row = self.store.conn.execute(
            "SELECT issue_id, start_commit FROM picks WHERE call_key = ?", (call_key,)
        ).fetchone()
        return None if row is None else (int(row["issue_id"]), str(row["start_commit"]))

    def revert(self, call_key: str, commit: str, reason: str) -> Revert:
        """Record a request to move the run back to ``commit``; the loop moves the ref."""
        reason = reason.strip()
        if not reason:
            raise BoardError("a revert needs a reason: say what went wrong with the newer commits")
        sha = self.resolve_commit(commit)
        with self.store.tx() as c:
            cur = c.execute(
                "INSERT INTO reverts (call_key, commit_sha, reason, at) VALUES (?,?,?,?)",
                (call_key, sha, reason, time.time()),
            )
            rid = cur.lastrowid
        assert rid is not None
        return Revert(id=rid, call_key=call_key, commit=sha, reason=reason)

    def reverts_for(self, call_key: str) -> list[Revert]:
        """The reverts the call requested, oldest first."""
        rows = self.store.conn.execute(
            "SELECT * FROM reverts WHERE call_key = ? ORDER BY id", (call_key,)
        ).fetchall()
        return [Revert(id=r["id"], call_key=r["call_key"], commit=r["commit_sha"], reason=r["reason"]) for r in rows]

    # -- start points ---------------------------------------------------------------------------------
    def candidates(self) -> list[Candidate]:
        """The baseline and every kept or accepted round's candidate, with their metrics."""
        run = self.store.run()
        best = run["best_commit"] or run["baseline_commit"]
        out: list[Candidate] = []
        if run["baseline_commit"]:
            out.append(Candidate(
                commit=run["baseline_commit"], source="baseline", status="baseline",
                metric=run["baseline_metric"], is_best=run["baseline_commit"] == best, title="baseline",
            ))
        for r in self._start_rounds():
            out.append(Candidate(
                commit=r.candidate, source="round", round=r.round, status=r.status, metric=r.metric,
                is_best=r.candidate == best, title=r.task.title if r.task else "",
            ))
        return out

    def resolve_commit(self, commit: str) -> str:
        """The full sha of ``commit``: "best", "baseline", "round-N" (that round's kept or accepted
        candidate), or an allowed start commit (or a unique prefix)."""
        run = self.store.run()
        commit = commit.strip()
        if commit == "baseline" or (commit == "best" and not run["best_commit"]):
            # Before any round is kept, the best commit is the baseline.
            if not run["baseline_commit"]:
                raise BoardError("the run has no baseline commit yet; try again in a later round")
            return str(run["baseline_commit"])
        if commit == "best":
            return str(run["best_commit"])
        starts = self._start_rounds()
        by_round = re.fullmatch(r"round[-_ ]?(\d+)", commit, flags=re.IGNORECASE)
        if by_round:
            n = int(by_round.group(1))
            for r in starts:
                if r.round == n:
                    return str(r.candidate)
            raise BoardError(
                f"round {n} has no kept or accepted candidate to start from; use 'best', 'baseline', "
                "or a round listed by list_candidates"
            )
        allowed = [run["baseline_commit"], *(r.candidate for r in starts)]
        allowed = list(dict.fromkeys(a for a in allowed if a))
        if commit in allowed:
            return commit
        matches = [a for a in allowed if len(commit) >= MIN_SHA_PREFIX and a.startswith(commit)]
        if len(matches) == 1:
            return matches[0]
        raise BoardError(
            f"commit {commit!r} is not a start point; use 'best', 'baseline', 'round-N', or a commit from "
            "list_candidates (the baseline or a kept or accepted round's candidate)"
        )

    # -- memory ---------------------------------------------------------------------------------------
    def read_memory(self) -> str:
        """The text of memory.md, empty if it does not exist yet."""
        path = self.store.memory_path
        return path.read_text() if path.exists() else ""

    def write_memory(self, text: str) -> None:
        """Replace memory.md with ``text``."""
        path = self.store.memory_path
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        # A rename, so a reader (or a kill) never sees half a file.
        os.replace(tmp, path)

    # -- rows -----------------------------------------------------------------------------------------
    def _start_rounds(self) -> list[RoundRecord]:
        """Kept and accepted rounds with a candidate, in round order: the sound places to start from."""
        return [r for r in self.store.round_records() if r.status in START_ROUND_STATUSES and r.candidate]

    @staticmethod
    def _issue(row: sqlite3.Row) -> Issue:
        return Issue(
            id=row["id"], title=row["title"], hypothesis=row["hypothesis"],
            acceptance_criteria=json.loads(row["acceptance"]), status=row["status"], priority=row["priority"],
            notes=row["notes"], rounds=json.loads(row["rounds"]), created_by=row["created_by"],
        )
