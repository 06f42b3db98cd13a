"""The evolutionary policy: end to end on the toy target, near-duplicate refusal, and parent selection."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from conftest import cli
from test_loop import EVAL, PASS, implementer, rows
from vibeserve.errors import VibeserveError
from vibeserve.policies import check_policy_options
from vibeserve.policies.archive import Archive, Candidate, Descriptor, changed_lines, near_duplicate
from vibeserve.policies.evolutionary import EvolutionaryPolicy
from vibeserve.policies.selection import elites, select_inspirations, select_parent
from vibeserve.store import RunStore
from vibeserve.types import RoundResult

STATIC = {"batching": "static", "kv_cache": "none", "precision": "fp32", "decoding": "plain", "kernels": "eager"}


def test_evolutionary_archives_every_candidate_and_refuses_a_repeat_before_the_gates(
        toy: Path, trajectory, tmp_path: Path) -> None:
    traj = trajectory([
        {**implementer("r001/a1/implementer", {"A.txt": "hello\nworld\n", "score.txt": "0.5\n"}),
         "mcp": [{"tool": "report_techniques", "arguments": STATIC}]},
        # the same change again from the same parent, spaced differently: refused, no gate runs
        implementer("r002/a1/implementer", {"A.txt": "hello\n  world  \n", "score.txt": "0.5\n"}),
        implementer("r002/a2/implementer", {"score.txt": "3.0\n"}),
        {"key": "r*/a*/judge", "reply": PASS},
        {"key": "r*/a*/evaluator", "reply": EVAL},
    ])
    runs = tmp_path / "runs"
    out = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "evo",
              "--policy", "evolutionary", "--rounds", "2", "-P", "temperature=0.01", check=True)
    run_dir = runs / "evo"
    assert "round budget reached (2 rounds)" in out.stdout
    assert rows(run_dir, "SELECT round, status, metric, attempts FROM rounds ORDER BY round") == [
        (0, "kept", 1.0, 0), (1, "accepted", 0.5, 1), (2, "kept", 3.0, 2)]
    assert rows(run_dir, "SELECT COUNT(*) FROM gates WHERE round = 2 AND attempt = 1") == [(0,)]
    assert {r for (r,) in rows(run_dir, "SELECT DISTINCT role FROM agent_calls")} == {
        "implementer", "judge", "evaluator"}

    store = RunStore.open(run_dir)
    try:
        archive = {(c.round, c.attempt): c for c in Archive(store).candidates()}
        # observing a round again (as resume may) changes nothing
        policy = EvolutionaryPolicy(store)
        policy.observe(RoundResult.model_validate_json(store.round(2)["result"]))
        assert {(c.round, c.attempt): c for c in Archive(store).candidates()} == archive
    finally:
        store.close()
    base, first, refused, second = archive[0, 1], archive[1, 1], archive[2, 1], archive[2, 2]
    assert len(archive) == 4
    assert base.status == "passed" and base.metric == 1.0 and base.parent is None and len(base.samples) == 2
    assert first.status == "passed" and first.metric == 0.5 and first.parent == base.commit
    assert first.techniques == Descriptor(**STATIC) and first.cell.startswith("batching=static")
    assert [v["gate"] for v in first.verdicts] == ["accuracy", "benchmark"] and len(first.samples) == 2
    assert first.spread is not None
    # round 2 started from the baseline (1.0 beats 0.5; at temperature 0.01 round 1 has a weight of e^-50)
    # and was shown round 1 as its inspiration
    assert refused.parent == base.commit and refused.inspirations == [first.commit]
    assert refused.status == "refused" and refused.verdicts == [] and refused.metric is None
    assert "the same change as round 1 attempt 1" in refused.feedback
    assert second.status == "passed" and second.metric == 3.0 and second.techniques is None  # none reported
    # the refusal reached the retry as feedback, and the brief showed the inspiration's diff
    prompt = (run_dir / "transcripts" / "r002-a2-implementer.jsonl").read_text()
    assert "Task: Evolve the baseline" in prompt
    assert "refused before any gate ran" in prompt
    brief = json.loads(rows(run_dir, "SELECT task FROM rounds WHERE round = 2")[0][0])["brief"]
    assert "round 1 attempt 1" in brief and "A.txt" in brief and "batching=static" in brief
    # the report shows the archive by cell (best elite first), not an issue backlog the policy does not keep
    summary = (run_dir / "report" / "summary.md").read_text()
    cells = summary.split("## Archive cells", 1)[1].split("\n\n")[1].splitlines()[2:]
    assert cells == ["| unreported | 3 | 2 | round 2 | 3.000 |",
                     "| batching=static kv_cache=none precision=fp32 decoding=plain kernels=eager | 1 | 1 | round 1 | 0.5000 |"]
    assert "## Issues" not in summary
    assert "<h2>Archive cells</h2>" in (run_dir / "report" / "index.html").read_text()


def cand(round_: int, metric: float | None, status: str = "passed", cell: dict | None = None) -> Candidate:
    return Candidate(round=round_, attempt=1, commit=f"{round_:040d}", status=status, metric=metric,
                     parent=None if round_ == 0 else "0" * 40,
                     techniques=Descriptor(**cell) if cell else None, changed_lines=[f"+line {round_}"])


def hand_made_archive() -> list[Candidate]:
    paged = {**STATIC, "kv_cache": "paged"}
    return [
        cand(0, 10.0),
        cand(1, 12.0, cell=STATIC),
        cand(2, 500.0, status="failed", cell=STATIC),  # the best number, but it failed: never a parent
        cand(3, 11.0, cell=paged),
        cand(4, 9999.0, status="refused", cell=paged),
        cand(5, 13.0, cell=STATIC),
    ]


def test_parent_selection_never_picks_a_failed_candidate_and_repeats_for_a_seed() -> None:
    archive = hand_made_archive()
    assert {c.round for c in elites(archive, 10.0, "max").values()} == {0, 3, 5}

    def draws(seed: int, temperature: float) -> list[int]:
        return [select_parent(archive, 10.0, "max", temperature, random.Random(seed * 1000 + n), n, 0)[0].round
                for n in range(1, 200)]

    hot = draws(7, 10.0)
    assert hot == draws(7, 10.0)  # reproducible for a fixed seed
    assert set(hot) == {0, 3, 5}  # only cell elites, never the failed or refused ones
    assert draws(7, 0.01).count(5) >= 195  # a cold softmax exploits the best cell
    # for "min" the smallest metric is the best: the baseline's 10 beats 11, 12 and 13
    assert select_parent(archive, 10.0, "min", 0.001, random.Random(1), 1, 0)[0].round == 0
    # migration: every N-th round the parent is the best of all cells
    parent, why = select_parent(archive, 10.0, "max", 100.0, random.Random(1), 6, 3)
    assert parent.round == 5 and "migration" in why
    picked = select_inspirations(archive, archive[0], random.Random(3), 2, 10.0, "max")
    assert picked[0].round == 5 and {c.round for c in picked} <= {1, 3, 5} and len(picked) == 3


def test_near_duplicates_are_whitespace_insensitive_and_measured_by_changed_lines() -> None:
    archived = [cand(1, 12.0)]
    archived[0].changed_lines = changed_lines("+++ b/x.py\n+a = 1\n-b  =  2\n+c = 3\n")
    assert "the same change as round 1" in near_duplicate(changed_lines("+a =    1\n- b = 2\n+c = 3\n"), archived, 0.9)
    assert "75% the same" in near_duplicate(changed_lines("+a = 1\n-b = 2\n+c = 3\n+d = 4\n"), archived, 0.7)
    assert near_duplicate(changed_lines("+a = 1\n-b = 2\n+c = 3\n+d = 4\n"), archived, 0.9) is None
    assert "empty" in near_duplicate([], archived, 0.9)


def test_archive_tables_are_created_idempotently(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path / "run")
    try:
        store.init_run("r", "t", "evolutionary", {}, {})
        Archive(store).put(cand(1, 2.0))
        assert [c.metric for c in Archive(store).candidates()] == [2.0]  # made again: nothing lost
        with pytest.raises(ValueError, match="IF NOT EXISTS"):
            store.ensure_tables("DROP TABLE evo_candidates")
    finally:
        store.close()


def test_policy_options_are_checked_with_messages_naming_the_option() -> None:
    assert check_policy_options("evolutionary", {"temperature": "0.5"}).temperature == 0.5
    with pytest.raises(VibeserveError, match="temperature: Input should be greater than 0"):
        check_policy_options("evolutionary", {"temperature": "0"})
    with pytest.raises(VibeserveError, match="temprature: Extra inputs are not permitted"):
        check_policy_options("evolutionary", {"temprature": "1"})
    with pytest.raises(VibeserveError, match="policy ralph takes no options"):
        check_policy_options("ralph", {"temperature": "1"})
