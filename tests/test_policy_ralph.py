"""The ralph policy end to end on the toy target, its memory.md, and the plateau stop."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from conftest import cli
from test_loop import BROKEN, EVAL, PASS, implementer, rows
from vibeserve.policies.memory import LOG_HEADING, MemoryRefused, RoundMemory
from vibeserve.target.scaffold import SERVER

JUDGE_AND_EVAL = [{"key": "r*/a*/judge", "reply": PASS}, {"key": "r*/a*/evaluator", "reply": EVAL}]


def test_ralph_carries_memory_md_from_round_to_round(toy: Path, trajectory, tmp_path: Path) -> None:
    notes = "# notes\nscore.txt at 2.0 was kept; try 3.0 next\n"
    traj = trajectory([
        {**implementer("r001/a1/implementer", {"score.txt": "2.0\n"}),
         "mcp": [{"tool": "write_memory", "arguments": {"text": notes}}]},
        implementer("r002/a1/implementer", {"server.py": BROKEN}),  # fails accuracy: the retry is told why
        implementer("r002/a2/implementer", {"server.py": SERVER, "score.txt": "2.01\n"}),  # accepted, not kept
        *JUDGE_AND_EVAL,
    ])
    runs = tmp_path / "runs"
    out = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "ralph",
              "--policy", "ralph", "--rounds", "2", check=True)
    run_dir = runs / "ralph"
    assert "round budget reached (2 rounds)" in out.stdout
    assert rows(run_dir, "SELECT round, status, metric FROM rounds ORDER BY round") == [
        (0, "kept", 1.0), (1, "kept", 2.0), (2, "accepted", 2.01)]
    # no orchestrator: only implementer, judge and evaluator calls
    assert {r for (r,) in rows(run_dir, "SELECT DISTINCT role FROM agent_calls")} == {
        "implementer", "judge", "evaluator"}
    # round 2 started from round 1's candidate, the best commit
    (best_after_1,) = rows(run_dir, "SELECT candidate FROM rounds WHERE round = 1")[0]
    assert rows(run_dir, "SELECT start_commit FROM rounds WHERE round = 2") == [(best_after_1,)]

    memory = RoundMemory(run_dir / "memory.md")
    assert memory.notes() == notes.strip()
    assert memory.log()[0] == "- round 1: kept, metric 2; hint: cache the score"
    assert memory.log()[1].startswith("- round 2: accepted, metric 2.01: ")
    # the next round's implementer was shown the notes and the round log
    prompt = (run_dir / "transcripts" / "r002-a1-implementer.jsonl").read_text()
    assert "try 3.0 next" in prompt and "- round 1: kept, metric 2" in prompt
    # killed after round 2 was recorded but before the policy observed it: resume observes it, once
    lines = (run_dir / "memory.md").read_text().splitlines(keepends=True)
    (run_dir / "memory.md").write_text("".join(line for line in lines if not line.startswith("- round 2:")))
    conn = sqlite3.connect(run_dir / "run.db")
    conn.execute("UPDATE run SET status = 'interrupted'")
    conn.commit()
    conn.close()
    cli("resume", "ralph", "--runs-dir", str(runs), check=True)
    assert [line[:12] for line in memory.log()] == ["- round 1: k", "- round 2: a"]
    # the brief is the same every round: only memory.md differs
    tasks = [json.loads(t)["brief"] for (t,) in rows(run_dir, "SELECT task FROM rounds WHERE round > 0")]
    assert tasks[0].split("## memory.md")[0] == tasks[1].split("## memory.md")[0]
    assert "first round" in tasks[0]


def test_plateau_flag_stops_the_run_and_is_kept_for_resume(toy: Path, trajectory, tmp_path: Path) -> None:
    traj = trajectory([implementer("r*/a*/implementer", {"NOTES.md": "nothing faster\n"}), *JUDGE_AND_EVAL])
    runs = tmp_path / "runs"
    out = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "flat",
              "--policy", "ralph", "--rounds", "3", "--plateau", "1", check=True)
    run_dir = runs / "flat"
    assert "run finished: plateau: no gain in the last 1 rounds" in out.stdout
    assert rows(run_dir, "SELECT status, stop_reason FROM run") == [
        ("finished", "plateau: no gain in the last 1 rounds")]
    assert rows(run_dir, "SELECT round, status FROM rounds ORDER BY round") == [(0, "kept"), (1, "accepted")]
    assert json.loads(rows(run_dir, "SELECT config FROM run")[0][0])["plateau"] == 1  # what resume reads
    again = cli("resume", "flat", "--runs-dir", str(runs), check=True)
    assert "already finished (plateau: no gain in the last 1 rounds)" in again.stdout


def test_an_unknown_policy_is_refused_before_the_run_exists(toy: Path, trajectory, tmp_path: Path) -> None:
    traj = trajectory([])
    runs = tmp_path / "runs"
    out = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "x",
              "--policy", "ralf")
    assert out.returncode != 0
    assert "unknown policy 'ralf'; choose one of: issue-tracker, ralph, evolutionary" in out.stdout + out.stderr
    assert not (runs / "x").exists()


def test_memory_notes_are_rewritten_and_the_round_log_is_kept(tmp_path: Path) -> None:
    memory = RoundMemory(tmp_path / "memory.md")
    assert memory.read() == "" and memory.log() == []
    assert memory.record_round(1, "rejected: accuracy gate:\n  wrong answer")
    assert not memory.record_round(1, "kept")  # observing a round again adds nothing
    memory.write_notes("first notes")
    memory.write_notes("second notes")
    assert memory.notes() == "second notes"
    assert memory.log() == ["- round 1: rejected: accuracy gate: wrong answer"]
    assert memory.record_round(2, "kept, metric 3")
    assert memory.read() == f"second notes\n\n{LOG_HEADING}\n- round 1: rejected: accuracy gate: wrong answer\n" \
                            "- round 2: kept, metric 3\n"
    with pytest.raises(MemoryRefused, match="round log"):
        memory.write_notes(f"mine\n{LOG_HEADING}\n- round 1: kept\n")
