"""The store's typed rows, and policy state that lives with its policy: its tables and what is snapshotted."""

from __future__ import annotations

from pathlib import Path

import pytest

from vibeserve.errors import StoreError
from vibeserve.policies.board import SNAPSHOT_TABLES, TABLES, IssueBoard
from vibeserve.store import RunStore
from vibeserve.types import GateName, GateVerdict, RoundResult, RoundStatus, Task

SHA = "a" * 40


def new_store(tmp_path: Path) -> RunStore:
    store = RunStore.create(tmp_path / "run")
    store.init_run("r1", "toy", "issue-tracker", {"benchmark": {"metric": "score", "direction": "max"}}, {})
    return store


def test_the_issue_tracker_makes_its_own_tables(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    assert not store.has_table("issues") and not store.has_table("picks")
    IssueBoard(store)
    assert all(store.has_table(t) for t in SNAPSHOT_TABLES)
    store.ensure_tables(TABLES)  # again, as every MCP server does: nothing changes
    assert store.query("SELECT COUNT(*) FROM issues")[0][0] == 0


def test_a_store_made_with_the_tables_in_the_schema_still_works(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with store.tx() as c:  # as a store made before the tables moved to the policy has them
        c.execute("CREATE TABLE issues (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, hypothesis TEXT NOT "
                  "NULL DEFAULT '', acceptance TEXT NOT NULL DEFAULT '[]', status TEXT NOT NULL DEFAULT 'open', priority "
                  "INTEGER NOT NULL DEFAULT 2, notes TEXT NOT NULL DEFAULT '', rounds TEXT NOT NULL DEFAULT '[]', "
                  "created_by TEXT NOT NULL DEFAULT '', updated_at REAL NOT NULL)")
        c.execute("INSERT INTO issues (title, updated_at) VALUES ('old issue', 0)")
    store.close()
    board = IssueBoard(RunStore.open(tmp_path / "run"))
    assert [i.title for i in board.list_issues()] == ["old issue"]


def test_only_the_declared_tables_are_snapshotted_and_restored(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    board = IssueBoard(store)
    board.create_issue("first")
    store.snapshot_policy_state("r001/orchestrator", SNAPSHOT_TABLES)
    board.create_issue("second")  # what a killed call did
    assert store.restore_policy_state("r001/orchestrator", SNAPSHOT_TABLES)
    assert [i.title for i in board.list_issues()] == ["first"]
    assert board.create_issue("again").id == 2  # the id counter was put back too
    # A policy that declares no tables gets memory.md back, and its rows stay as they are.
    store.snapshot_policy_state("r002/implementer", ())
    board.create_issue("kept")
    assert store.restore_policy_state("r002/implementer", ())
    assert [i.title for i in board.list_issues()] == ["first", "again", "kept"]
    with pytest.raises(ValueError, match="plain lower-case names"):
        store.snapshot_policy_state("r003/implementer", ("issues; DROP TABLE run",))


def test_typed_rows_parse_task_result_and_gates_once(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    task = Task(start_commit=SHA, brief="go faster", title="faster")
    store.start_round(1)
    verdict = GateVerdict(gate=GateName.BENCHMARK, passed=True, commit=SHA, metric=2.0, samples=[2.0, 2.1],
                          report={"objectives": {"latency_ms": [5.0, 6.0]}})
    store.record_gate(1, 1, verdict)
    result = RoundResult(round=1, task=task, status=RoundStatus.KEPT, candidate=SHA, attempts=1, metric=2.0)
    store.update_round(1, status="kept", task=task.model_dump_json(), result=result.model_dump_json(), metric=2.0)
    store.update_run(best_commit=SHA, best_metric=2.0)

    run = store.run_record()
    assert (run.best_commit, run.best_metric, run.config["benchmark"]["metric"]) == (SHA, 2.0, "score")
    (r,) = store.round_records()
    assert r.task == task and r.result == result and r.status is RoundStatus.KEPT
    (g,) = store.gate_records(1)
    assert g.gate is GateName.BENCHMARK and g.passed is True and g.samples == [2.0, 2.1]
    assert g.report["objectives"] == {"latency_ms": [5.0, 6.0]} and g.commit == SHA

    store.update_round(1, task="{not json")
    with pytest.raises(StoreError, match="round 1: column task is not JSON"):
        store.round_records()
    store.update_round(1, task='{"brief": "no start commit"}')
    with pytest.raises(StoreError, match="round 1: the recorded Task does not read"):
        store.round_record(1)


def test_query_reads_and_nothing_else(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    assert store.query("SELECT id FROM run")[0]["id"] == "r1"
    for sql in ("DELETE FROM run", "SELECT 1; DROP TABLE run"):
        with pytest.raises(ValueError, match="one SELECT"):
            store.query(sql)
    assert store.has_table("run")


def test_the_wall_clock_counts_rounds_in_flight_once_and_not_the_time_between_sessions(tmp_path: Path) -> None:
    from vibeserve.loop.budget import working_seconds

    store = new_store(tmp_path)
    for n in (1, 2, 3):
        store.start_round(n)
    # rounds 1 and 2 side by side (100-160 and 130-200), then round 3 starts at 300 and is killed after its
    # last recorded step at 340; the run is resumed a day later
    store.update_round(1, started_at=100.0, finished_at=160.0, status="kept")
    store.update_round(2, started_at=130.0, finished_at=200.0, status="rejected")
    store.update_round(3, started_at=300.0)
    store.record_step(3, 1, "implementer", {})
    with store.tx() as c:
        c.execute("UPDATE steps SET at = 340.0 WHERE round = 3")
    assert working_seconds(store) == pytest.approx(100.0 + 40.0)
    store.update_round(3, finished_at=350.0)
    assert working_seconds(store) == pytest.approx(150.0)
