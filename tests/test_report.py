"""The run report: tables over a real SQLite run store, the trajectory PNG, summary.md and index.html."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest

from vibeserve.errors import StoreError
from vibeserve.policies.board import IssueBoard
from vibeserve.report import role_table, round_rows, run_summary, trajectory_png, write_report
from vibeserve.report.formats import fmt_duration, fmt_gain, fmt_metric
from vibeserve.store import RunStore
from vibeserve.types import (
    AgentResult,
    ExitReason,
    GateName,
    GateVerdict,
    Role,
    RoundResult,
    RoundStatus,
    Task,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BASE = "b" * 40


def sha(n: int) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()


def new_store(tmp_path: Path, direction: str = "max", peers: list | None = None) -> RunStore:
    store = RunStore.create(tmp_path / "runs" / "r1")
    config: dict = {"benchmark": {"metric": "output_tokens_per_s", "direction": direction, "unit": "tok/s"}}
    if peers is not None:
        config["peers"] = peers
    store.init_run("r1", "smollm2-chat-cpu", "issue-tracker", config, {})
    return store


def add_round(store: RunStore, n: int, status: RoundStatus, title: str, metric: float | None = None,
              reason: str = "", attempts: int = 1, gates: tuple[GateVerdict, ...] = ()) -> None:
    store.start_round(n)
    task = Task(start_commit=BASE, brief=f"work on {title}", title=title, issue_id=n)
    for g in gates:
        store.record_gate(n, attempts, g)
    result = RoundResult(round=n, task=task, status=status, candidate=sha(n), attempts=attempts,
                         metric=metric, verdicts=list(gates), reason=reason)
    store.update_round(n, status=str(status), task=task.model_dump_json(), start_commit=BASE,
                       candidate=sha(n), metric=metric, attempts=attempts, result=result.model_dump_json(),
                       finished_at=time.time())


def add_call(store: RunStore, key: str, role: Role, wall_s: float, cost: float | None,
             tokens: tuple[int, int] = (1000, 200)) -> None:
    result = AgentResult(reply={"ok": True}, exit_reason=ExitReason.OK, wall_s=wall_s, tokens_in=tokens[0],
                         tokens_out=tokens[1], cost_usd=cost)
    store.record_agent_call(key, int(key[1:4]), 1, role, "scripted", "fake-model", result)


def populate(store: RunStore, baseline: float = 100.0, best: float = 150.0) -> None:
    """Six rounds of every kind and eight agent calls over four roles (orchestrator without cost)."""
    store.update_run(baseline_metric=baseline, baseline_commit=BASE)
    add_round(store, 1, RoundStatus.KEPT, "Batch decode steps <b>fast</b>", metric=120.0)
    add_round(store, 2, RoundStatus.REJECTED, "KV cache reuse", attempts=3, gates=(
        GateVerdict(gate=GateName.ACCURACY, passed=False, commit=sha(2), reason="token mismatch at prompt 3"),))
    add_round(store, 3, RoundStatus.ACCEPTED, "Fuse sampling", metric=118.0, reason="gain below min_gain")
    add_round(store, 4, RoundStatus.KEPT, "Pinned threads", metric=best)
    add_round(store, 5, RoundStatus.FAILED, "Quantize weights", attempts=3, reason="retries exhausted")
    add_round(store, 6, RoundStatus.REJECTED, "Cache responses", metric=400.0,
              reason="judge: outputs keyed on prompts")
    store.update_run(best_metric=best, best_commit=sha(4), status="finished", stop_reason="budget: rounds",
                     finished_at=store.run()["created_at"] + 3723)
    for i, w in enumerate((100.0, 200.0, 300.0)):
        add_call(store, f"r00{i + 1}/a1/implementer", Role.IMPLEMENTER, w, 1.0)
    add_call(store, "r001/a1/judge", Role.JUDGE, 50.0, 0.25)
    add_call(store, "r002/a1/judge", Role.JUDGE, 70.0, 0.25)
    add_call(store, "r001/a1/evaluator", Role.EVALUATOR, 30.0, 0.5)
    add_call(store, "r001/a0/orchestrator", Role.ORCHESTRATOR, 10.0, None)
    add_call(store, "r002/a0/orchestrator", Role.ORCHESTRATOR, 20.0, None)


def test_role_table_counts_shares_and_means(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    populate(store)
    rows = role_table(store)
    assert [r.role for r in rows] == ["implementer", "judge", "evaluator", "orchestrator"]
    by = {r.role: r for r in rows}
    assert by["implementer"].calls == 3 and by["implementer"].wall_s == pytest.approx(600.0)
    assert by["implementer"].mean_s == pytest.approx(200.0)
    assert by["implementer"].share == pytest.approx(600.0 / 780.0)
    assert by["judge"].mean_s == pytest.approx(60.0)
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    assert by["implementer"].tokens_in == 3000 and by["implementer"].tokens_out == 600
    assert by["implementer"].cost_usd == pytest.approx(3.0)
    assert by["orchestrator"].cost_usd is None


def test_round_rows_carry_titles_commits_gains_and_reasons(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    populate(store)
    rows = round_rows(store)
    assert [r.status for r in rows] == ["kept", "rejected", "accepted", "kept", "failed", "rejected"]
    r1, r2 = rows[0], rows[1]
    assert r1.title == "Batch decode steps <b>fast</b>"
    assert r1.candidate == sha(1)[:8] and r1.start_commit == BASE[:8]
    assert r1.vs_baseline == pytest.approx(1.2) and r1.vs_best == pytest.approx(1.2)
    assert rows[3].vs_baseline == pytest.approx(1.5) and rows[3].vs_best == pytest.approx(1.25)  # best before: 120
    assert rows[5].vs_best == pytest.approx(400 / 150)  # rejected rounds are compared with the best too
    assert r2.metric is None and r2.vs_baseline is None and r2.attempts == 3
    assert r2.reason == "accuracy: token mismatch at prompt 3"  # from the failed gate
    assert rows[5].reason == "judge: outputs keyed on prompts"


def test_a_round_kept_on_a_later_try_gives_its_judges_reason_not_an_earlier_failure(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.update_run(baseline_metric=100.0, baseline_commit=BASE)
    store.start_round(1)
    task = Task(start_commit=BASE, brief="cheaper steps", title="Cheaper steps", issue_id=1)
    store.record_gate(1, 1, GateVerdict(gate=GateName.ACCURACY, passed=False, commit=sha(10),
                                        reason="10 of 22 cases differ from the reference"))
    store.record_gate(1, 2, GateVerdict(gate=GateName.ACCURACY, passed=True, commit=sha(1)))
    result = RoundResult(round=1, task=task, status=RoundStatus.KEPT, candidate=sha(1), attempts=2, metric=130.0,
                         judge_reasons="only the serving path changed")
    store.update_round(1, status="kept", task=task.model_dump_json(), start_commit=BASE, candidate=sha(1),
                       metric=130.0, attempts=2, result=result.model_dump_json(), finished_at=time.time())
    (row,) = round_rows(store)
    assert row.reason == "only the serving path changed (earlier: try 1 failed accuracy)"
    assert "differ from the reference" not in row.reason


@pytest.mark.parametrize(
    ("direction", "baseline", "best", "speedup", "gain_r1"),
    [("max", 100.0, 150.0, 1.5, 1.2), ("min", 200.0, 50.0, 4.0, 200.0 / 120.0)],
)
def test_speedup_follows_the_benchmark_direction(tmp_path: Path, direction: str, baseline: float, best: float,
                                                 speedup: float, gain_r1: float) -> None:
    store = new_store(tmp_path, direction=direction)
    populate(store, baseline=baseline, best=best)
    s = run_summary(store)
    assert s.benchmark.direction == direction
    assert s.speedup == pytest.approx(speedup)
    assert round_rows(store)[0].vs_baseline == pytest.approx(gain_r1)


def test_run_summary_counts_rounds_cost_and_wall_time(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    populate(store)
    s = run_summary(store)
    assert (s.run_id, s.target, s.policy, s.status) == ("r1", "smollm2-chat-cpu", "issue-tracker", "finished")
    assert s.rounds_by_status == {"kept": 2, "accepted": 1, "rejected": 2, "failed": 1, "running": 0}
    assert s.rounds_total == 6
    assert s.cost_usd == pytest.approx(4.0)
    assert s.wall_s == pytest.approx(3723)
    assert (s.best_metric, s.best_commit) == (150.0, sha(4))


def test_best_falls_back_to_the_best_kept_round(tmp_path: Path) -> None:
    store = new_store(tmp_path, direction="min")
    store.update_run(baseline_metric=10.0, baseline_commit=BASE)
    add_round(store, 1, RoundStatus.KEPT, "a", metric=8.0)
    add_round(store, 2, RoundStatus.KEPT, "b", metric=5.0)
    add_round(store, 3, RoundStatus.REJECTED, "c", metric=1.0)
    s = run_summary(store)
    assert (s.best_metric, s.best_commit) == (5.0, sha(2))
    assert s.speedup == pytest.approx(2.0)


def test_bad_direction_is_a_store_error(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path / "run")
    store.init_run("r", "t", "ralph", {"benchmark": {"metric": "x", "direction": "up"}}, {})
    with pytest.raises(StoreError, match="direction"):
        run_summary(store)


def test_write_report_writes_summary_png_and_html(tmp_path: Path) -> None:
    store = new_store(tmp_path, peers=[{"name": "vLLM", "metric": 180.0}])
    populate(store)
    IssueBoard(store)  # the issue tracker's tables belong to its policy, which makes them
    with store.tx() as c:
        c.execute("INSERT INTO issues (title, status, rounds, updated_at) VALUES (?, 'done', '[1]', 0)",
                  ("Batch decode <script>alert(1)</script>",))
    index = write_report(store, tmp_path / "report")
    out = tmp_path / "report"
    assert index == out / "index.html"

    md = (out / "summary.md").read_text()
    assert "100.0 → 150.0 tok/s (1.5x better than the baseline, higher is better)" in md
    assert "| Role | Calls | Duration | Share | Avg/call | Tokens in | Tokens out | Cost |" in md
    assert "| implementer | 3 | 10m 00s | 76.9% | 3m 20s | 3,000 | 600 | $3.00 |" in md
    assert "| orchestrator | 2 | 30s | 3.8% | 15s | 2,000 | 400 | n/a |" in md
    assert "| total | 8 | 13m 00s | 100.0% |" in md
    assert re.search(r"\| 4 \| kept \| Pinned threads \| bbbbbbbb \| " + sha(4)[:8] + r" \| 150\.0 \| "
                     r"1\.5x better \| 25% better \|", md)
    assert "| 5 | failed | Quantize weights |" in md and "retries exhausted" in md
    assert "\\<b\\>fast\\</b\\>" in md  # raw HTML in a title is escaped in Markdown too
    assert "peer: vLLM | 180.0 tok/s" in md
    assert "wall time | 1h 02m" in md

    html = index.read_text()
    assert '<img src="trajectory.png"' in html
    assert "<strong>150.0</strong>" in html
    assert "Batch decode steps &lt;b&gt;fast&lt;/b&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html

    png = (out / "trajectory.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000


def test_empty_run_still_reports(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    index = write_report(store, tmp_path / "report")
    assert (tmp_path / "report" / "trajectory.png").read_bytes().startswith(PNG_MAGIC)
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "nothing measured yet" in md and "No rounds yet." in md and "No agent calls yet." in md
    assert "nothing measured yet" in index.read_text()


def test_trajectory_with_only_a_baseline(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.update_run(baseline_metric=42.0, baseline_commit=BASE)
    path = trajectory_png(store, tmp_path / "plots" / "t.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert run_summary(store).speedup == pytest.approx(1.0)


def test_number_formats() -> None:
    assert fmt_duration(83) == "1m 23s"
    assert fmt_duration(3.21) == "3.2s"
    assert fmt_duration(7260) == "2h 01m"
    assert fmt_metric(17476.3) == "17476"  # plain notation, never 1.748e+04
    assert fmt_metric(12.345) in ("12.35", "12.34")
    assert fmt_metric(0.012345) in ("0.01234", "0.01235")
    assert fmt_metric(None) == "—"
    assert fmt_gain(17476 / 566) == "30.9x better"  # a latency cut from 17476 ms to 566 ms
    assert fmt_gain(0.5) == "2x worse" and fmt_gain(1.03) == "3% better" and fmt_gain(1.0) == "same"
