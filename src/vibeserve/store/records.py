"""Typed rows of the run store: the run, its rounds and its gate verdicts, each JSON column parsed once.

``RunStore.run_record``, ``round_records`` and ``gate_records`` return these; a column that cannot be read
(JSON that is not JSON, a task or result of an unknown shape) is a ``StoreError`` naming the row, so a
damaged store is reported, not half-read.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from vibeserve.errors import StoreError
from vibeserve.types import GateName, RoundResult, RoundStatus, Task


class Record(BaseModel):
    model_config = ConfigDict(frozen=True)


def _json(row: sqlite3.Row, column: str, where: str) -> Any:
    try:
        return json.loads(row[column]) if row[column] is not None else None
    except json.JSONDecodeError as e:
        raise StoreError(f"run.db: {where}: column {column} is not JSON ({e}); the store is damaged") from None


def _model(model: type[BaseModel], data: Any, where: str) -> Any:
    if data is None:
        return None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise StoreError(f"run.db: {where}: the recorded {model.__name__} does not read "
                         f"({e.errors()[0]['msg']} at {'.'.join(str(p) for p in e.errors()[0]['loc'])})") from None


class RunRecord(Record):
    """The run row; ``config`` is the RunConfig the run started with, as a dict."""

    id: str
    target: str
    policy: str
    status: str
    stop_reason: str
    config: dict[str, Any]
    baseline_commit: str | None
    baseline_metric: float | None
    best_commit: str | None
    best_metric: float | None
    created_at: float
    finished_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        config = _json(row, "config", "the run row")
        if not isinstance(config, dict):
            raise StoreError("run.db: the run row's config is not a JSON object; the store is damaged")
        fields = {k: row[k] for k in cls.model_fields if k != "config"}
        return cls(config=config, **fields)


class RoundRecord(Record):
    """One round row with its ``Task`` and (once finished) its ``RoundResult`` parsed."""

    round: int
    status: RoundStatus
    task: Task | None
    start_commit: str | None
    candidate: str | None
    metric: float | None
    attempts: int
    result: RoundResult | None
    started_at: float
    finished_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RoundRecord:
        where = f"round {row['round']}"
        task = _model(Task, _json(row, "task", where), where)
        result = _model(RoundResult, _json(row, "result", where), where)
        fields = {k: row[k] for k in cls.model_fields if k not in ("task", "result")}
        return cls(task=task, result=result, **fields)


class GateRecord(Record):
    """One gate verdict as stored: ``samples`` and ``report`` parsed, ``passed`` a bool."""

    id: int
    round: int
    attempt: int
    gate: GateName
    commit: str
    passed: bool
    metric: float | None
    samples: list[float]
    spread: float | None
    reason: str
    report: dict[str, Any]
    command: list[str]
    started_at: float
    wall_s: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> GateRecord:
        where = f"gate {row['id']} (round {row['round']})"
        return cls(id=row["id"], round=row["round"], attempt=row["attempt"], gate=row["gate"],
                   commit=row["commit_sha"], passed=bool(row["passed"]), metric=row["metric"],
                   samples=_json(row, "samples", where) or [], spread=row["spread"], reason=row["reason"],
                   report=_json(row, "report", where) or {}, command=_json(row, "command", where) or [],
                   started_at=row["started_at"], wall_s=row["wall_s"])
