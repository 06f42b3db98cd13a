"""The issue board's rules, on a real SQLite run store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from vibeserve.policies.board import BoardError, IssueBoard
from vibeserve.store.db import RunStore

BASE = "b" * 40
KEPT = "c" * 40
ACCEPTED = "d" * 40
REJECTED = "e" * 40


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    s = RunStore.create(tmp_path / "run")
    s.init_run("run-1", "target", "issue-tracker", {}, {})
    s.update_run(baseline_commit=BASE, baseline_metric=10.0)
    yield s
    s.close()


def add_round(s: RunStore, n: int, status: str, candidate: str, metric: float | None, title: str = "") -> None:
    s.start_round(n)
    s.update_round(n, status=status, candidate=candidate, metric=metric,
                   task=json.dumps({"start_commit": BASE, "brief": "b", "title": title}))


@pytest.fixture
def board(store: RunStore) -> IssueBoard:
    add_round(store, 1, "kept", KEPT, 12.0, "batching")
    add_round(store, 2, "rejected", REJECTED, None)
    add_round(store, 3, "accepted", ACCEPTED, 11.0, "kv cache")
    store.update_run(best_commit=KEPT, best_metric=12.0)
    return IssueBoard(store)


def test_create_list_get_and_update(board: IssueBoard) -> None:
    a = board.create_issue("Batch requests", "one forward per step", ["2x tok/s"], 1, created_by="r001/orchestrator")
    b = board.create_issue("  Cache KV  ", "", [], 3)
    assert (a.id, b.id) == (1, 2)
    assert a.status == "open" and a.acceptance_criteria == ["2x tok/s"] and a.created_by == "r001/orchestrator"
    assert b.title == "Cache KV"  # stripped
    assert [i.id for i in board.list_issues()] == [1, 2]

    board.update_issue(1, notes="tried static batching")
    board.update_issue(1, notes="needs padding", add_round=4)
    board.update_issue(1, add_round=4)  # linking a round twice keeps it once
    upd = board.update_issue(1, status="done", priority=2, add_round=2)
    assert upd.notes == "tried static batching\nneeds padding"
    assert upd.rounds == [2, 4]
    assert (upd.status, upd.priority) == ("done", 2)
    assert board.get_issue(1) == upd
    assert [i.id for i in board.list_issues("done")] == [1]
    assert [i.id for i in board.list_issues("open")] == [2]


def test_bad_issue_requests_say_what_to_do(board: IssueBoard) -> None:
    with pytest.raises(BoardError, match="issue 7 does not exist; call list_issues"):
        board.get_issue(7)
    with pytest.raises(BoardError, match="priority"):
        board.create_issue("x", "h", [], priority=5)
    with pytest.raises(BoardError, match="title"):
        board.create_issue("   ", "h", [])
    board.create_issue("x", "h", [])
    with pytest.raises(BoardError, match="nothing to update"):
        board.update_issue(1)
    with pytest.raises(BoardError, match="status is one of"):
        board.update_issue(1, status="finished")
    with pytest.raises(BoardError, match="unknown status"):
        board.list_issues("finished")
    with pytest.raises(BoardError, match="issue 9 does not exist"):
        board.update_issue(9, notes="n")
    assert board.get_issue(1).status == "open"  # refused updates changed nothing


def test_pick_next_resolves_and_records_the_start_commit(board: IssueBoard) -> None:
    board.create_issue("one", "h", [])
    pick = board.pick_next("r004/orchestrator", 1, "best")
    assert pick.start_commit == KEPT
    assert board.pick_for("r004/orchestrator") == (1, KEPT)
    assert board.get_issue(1).status == "in_progress"
    assert board.pick_for("r005/orchestrator") is None

    assert board.pick_next("r005/orchestrator", 1, "baseline").start_commit == BASE
    assert board.pick_next("r006/orchestrator", 1, ACCEPTED).start_commit == ACCEPTED
    assert board.pick_next("r007/orchestrator", 1, ACCEPTED[:7]).start_commit == ACCEPTED  # unique prefix
    assert board.pick_next("r008/orchestrator", 1, BASE).start_commit == BASE
    # A round by number: its candidate whether it was kept or only accepted.
    assert board.pick_next("r009/orchestrator", 1, "round-3").start_commit == ACCEPTED
    assert board.pick_next("r010/orchestrator", 1, "Round 1").start_commit == KEPT


def test_pick_next_refuses_bad_issues_and_commits(board: IssueBoard) -> None:
    board.create_issue("one", "h", [])
    board.create_issue("two", "h", [])
    board.update_issue(2, status="done")
    with pytest.raises(BoardError, match="issue 3 does not exist"):
        board.pick_next("k", 3, "best")
    with pytest.raises(BoardError, match="issue 2 is done; pick an open or in_progress issue"):
        board.pick_next("k", 2, "best")
    for bad in (REJECTED, "f" * 40, KEPT[:4], "HEAD~1"):
        with pytest.raises(BoardError, match="not a start point.*list_candidates"):
            board.pick_next("k", 1, bad)
    for bad_round in ("round-2", "round-9"):  # rejected, and no such round
        with pytest.raises(BoardError, match=f"round {bad_round[-1]} has no kept or accepted candidate"):
            board.pick_next("k", 1, bad_round)
    assert board.pick_for("k") is None
    assert board.get_issue(1).status == "open"  # a refused pick leaves the issue alone


def test_best_is_the_baseline_before_any_round_is_kept(store: RunStore) -> None:
    board = IssueBoard(store)
    board.create_issue("one", "h", [])
    assert board.pick_next("r001/orchestrator", 1, "best").start_commit == BASE


def test_a_second_pick_in_one_call_replaces_the_first(board: IssueBoard, store: RunStore) -> None:
    board.create_issue("one", "h", [])
    board.create_issue("two", "h", [])
    board.pick_next("r004/orchestrator", 1, "best")
    board.pick_next("r004/orchestrator", 2, "baseline")
    assert board.pick_for("r004/orchestrator") == (2, BASE)
    rows = store.conn.execute("SELECT * FROM picks WHERE call_key = 'r004/orchestrator'").fetchall()
    assert len(rows) == 1
    # Issue 1 was never worked on, so the abandoned pick puts it back in the backlog.
    assert board.get_issue(1).status == "open"
    assert board.get_issue(2).status == "in_progress"


def test_picks_are_visible_to_another_connection(board: IssueBoard, store: RunStore) -> None:
    board.create_issue("one", "h", [])
    board.pick_next("r004/orchestrator", 1, "best")
    other = RunStore.open(store.dir)  # as the MCP server process and the loop each hold their own
    try:
        assert IssueBoard(other).pick_for("r004/orchestrator") == (1, KEPT)
    finally:
        other.close()


def test_revert_validates_the_commit_and_records_a_row(board: IssueBoard, store: RunStore) -> None:
    r = board.revert("r004/orchestrator", "baseline", "round 1 broke streaming")
    assert (r.commit, r.reason) == (BASE, "round 1 broke streaming")
    board.revert("r004/orchestrator", ACCEPTED, "try the kv cache line")
    assert [x.commit for x in board.reverts_for("r004/orchestrator")] == [BASE, ACCEPTED]
    assert board.reverts_for("r005/orchestrator") == []
    with pytest.raises(BoardError, match="not a start point"):
        board.revert("r004/orchestrator", REJECTED, "why not")
    with pytest.raises(BoardError, match="needs a reason"):
        board.revert("r004/orchestrator", BASE, "  ")
    assert store.conn.execute("SELECT COUNT(*) FROM reverts").fetchone()[0] == 2


def test_candidates_are_the_baseline_and_kept_or_accepted_rounds(board: IssueBoard, store: RunStore) -> None:
    add_round(store, 4, "failed", "a" * 40, None)
    cands = board.candidates()
    assert [(c.commit, c.source, c.round, c.status, c.metric) for c in cands] == [
        (BASE, "baseline", None, "baseline", 10.0),
        (KEPT, "round", 1, "kept", 12.0),
        (ACCEPTED, "round", 3, "accepted", 11.0),
    ]
    assert [c.is_best for c in cands] == [False, True, False]
    assert [c.title for c in cands][1:] == ["batching", "kv cache"]


def test_memory_round_trips_through_memory_md(board: IssueBoard, store: RunStore) -> None:
    assert board.read_memory() == ""
    board.write_memory("# Memory\n- batching helps\n")
    assert store.memory_path.read_text() == "# Memory\n- batching helps\n"
    assert board.read_memory() == "# Memory\n- batching helps\n"
    board.write_memory("replaced")
    assert board.read_memory() == "replaced"
