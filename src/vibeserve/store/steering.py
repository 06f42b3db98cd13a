"""Steering a run from outside: instructions for the next round's brief, and a request to pause.

``vibeserve steer`` and ``vibeserve pause`` write to the run's store from their own process while the
owning process (``vibeserve run``/``resume``) goes on: each write is one short SQLite transaction, and WAL
with the store's ``busy_timeout`` lets the two processes take turns. The owner reads the table between
rounds: an instruction is taken into the brief of the first round whose task is chosen after it was added
(and marked with that round), a pause request stops the run once the rounds in flight are committed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from vibeserve.errors import RunNotFound, VibeserveError
from vibeserve.store.db import RunStore
from vibeserve.store.lock import owner
from vibeserve.types import Task

TABLE = "steering"
DDL = """
CREATE TABLE IF NOT EXISTS steering (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,              -- instruction | pause
    text TEXT NOT NULL DEFAULT '',
    added_at REAL NOT NULL,
    round INTEGER,                   -- instruction: the round whose brief carried it; pause: the last round before it
    done_at REAL                     -- when it was taken into a brief, or when the run paused
);
"""
INSTRUCTION, PAUSE = "instruction", "pause"
MAX_CHARS = 4000
CONTROL_ARM = "baseline"  # the policy of a `vibeserve baseline` run: no brief to steer, and it does not resume
HEADING = "Instructions from the user for this round (`vibeserve steer`); follow them:"


class SteeringError(VibeserveError):
    """A steer or pause the run cannot take (empty text, a finished run, nothing to pause)."""


@dataclass(frozen=True)
class Steering:
    """One row of the steering table."""

    id: int
    kind: str
    text: str
    added_at: float
    round: int | None
    done_at: float | None

    @property
    def pending(self) -> bool:
        return self.done_at is None

    @property
    def added(self) -> str:
        """When it was given, in local time."""
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.added_at))

    @property
    def outcome(self) -> str:
        """What became of it, in words."""
        if self.kind == PAUSE:
            if self.pending:
                return "waiting for the rounds in flight to finish"
            return "lapsed: the run stopped another way" if self.round is None else f"paused after round {self.round}"
        return "waiting for the next round" if self.pending else f"in round {self.round}'s brief"


def entries(store: RunStore) -> list[Steering]:
    """Every instruction and pause request in the order given (none for a run never steered)."""
    if not store.has_table(TABLE):
        return []
    return [Steering(r["id"], r["kind"], r["text"], r["added_at"], r["round"], r["done_at"])
            for r in store.query("SELECT * FROM steering ORDER BY id")]


def _add(store: RunStore, kind: str, text: str) -> Steering:
    store.ensure_tables(DDL)
    with store.tx() as c:
        cur = c.execute("INSERT INTO steering (kind, text, added_at) VALUES (?,?,?)", (kind, text, time.time()))
        row = c.execute("SELECT * FROM steering WHERE id = ?", (cur.lastrowid,)).fetchone()
    return Steering(row["id"], row["kind"], row["text"], row["added_at"], row["round"], row["done_at"])


# -- what the owning process does -------------------------------------------------------------------
def pending_instructions(store: RunStore) -> list[Steering]:
    """Instructions no round's brief has carried yet (shown to the orchestrator before it picks)."""
    return [e for e in entries(store) if e.kind == INSTRUCTION and e.pending]


def take_instructions(store: RunStore, n: int) -> list[Steering]:
    """The instructions round ``n``'s brief carries: those not yet taken, and those already taken by round ``n``
    (a round whose task is chosen again after a kill carries the same ones), marked as taken by ``n``."""
    if not store.has_table(TABLE):
        return []
    now = time.time()
    with store.tx() as c:
        c.execute("UPDATE steering SET round = ?, done_at = ? WHERE kind = ? AND done_at IS NULL",
                  (n, now, INSTRUCTION))
        rows = c.execute("SELECT * FROM steering WHERE kind = ? AND round = ? ORDER BY id", (INSTRUCTION, n)).fetchall()
    return [Steering(r["id"], r["kind"], r["text"], r["added_at"], r["round"], r["done_at"]) for r in rows]


def steered(task: Task, instructions: list[Steering]) -> Task:
    """``task`` with the instructions appended to its brief, each with the time it was given."""
    if not instructions:
        return task
    lines = [f"- ({time.strftime('%Y-%m-%d %H:%M', time.localtime(i.added_at))}) {i.text}" for i in instructions]
    return task.model_copy(update={"brief": f"{task.brief.rstrip()}\n\n{HEADING}\n" + "\n".join(lines)})


def pause_requested(store: RunStore) -> Steering | None:
    """The oldest pause request not yet honoured, or None."""
    return next((e for e in entries(store) if e.kind == PAUSE and e.pending), None)


def mark_paused(store: RunStore, after_round: int | None) -> None:
    """Every open pause request closed: the run stopped after round ``after_round`` (None: the process it was
    asked of ended another way, and a later ``resume`` must not pause at once because of it)."""
    if not store.has_table(TABLE):
        return
    with store.tx() as c:
        c.execute("UPDATE steering SET round = ?, done_at = ? WHERE kind = ? AND done_at IS NULL",
                  (after_round, time.time(), PAUSE))


# -- what `vibeserve steer` and `vibeserve pause` do --------------------------------------------------
def _open(run_dir: Path) -> RunStore:
    if not (run_dir / RunStore.FILE).is_file():
        raise RunNotFound(f"no run at {run_dir}")
    return RunStore.open(run_dir)


def add_instruction(run_dir: Path, text: str) -> tuple[Steering, str]:
    """Record an instruction for the next round's brief; returns it and the run's status."""
    text = text.strip()
    if not text:
        raise SteeringError("the instruction is empty: give the text the next round's brief should carry, e.g. "
                            f"`vibeserve steer {run_dir.name} \"try batching the decode steps\"`")
    if len(text) > MAX_CHARS:
        raise SteeringError(f"the instruction is {len(text)} characters; keep it under {MAX_CHARS} (it goes into "
                            "every prompt of the round)")
    store = _open(run_dir)
    try:
        run = store.run()
        status = run["status"]
        if run["policy"] == CONTROL_ARM:
            raise SteeringError(f"run {run_dir.name} is a control arm (vibeserve baseline): no agent reads a brief "
                                "there, so there is nothing to steer (nothing was recorded)")
        if status in ("finished", "failed"):
            raise SteeringError(f"run {run_dir.name} is {status}, so it has no next round to steer; start a new "
                                "run (nothing was recorded)")
        return _add(store, INSTRUCTION, text), status
    finally:
        store.close()


def request_pause(run_dir: Path) -> tuple[Steering, str]:
    """Ask the process running the run to stop after the rounds in flight; refused when nothing runs it.
    Returns the request and the run's policy (a control arm stops for good: it does not resume)."""
    store = _open(run_dir)
    try:
        run = store.run()
        status = run["status"]
        if status in ("finished", "failed"):
            raise SteeringError(f"run {run_dir.name} is {status}; there is nothing to pause")
        if owner(run_dir) is None:
            raise SteeringError(f"run {run_dir.name} is not running (it is {status}): there is nothing to pause; "
                                f"continue it with `vibeserve resume {run_dir.name}`")
        return _add(store, PAUSE, ""), run["policy"]
    finally:
        store.close()
