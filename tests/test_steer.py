"""`vibeserve steer`, `pause` and `resume`: instructions written into the store by another process while a run
goes on (and while it is paused) reach the next round's brief, a pause stops a serial (issue-tracker) and a
parallel (evolutionary) run between rounds with exit 0, and the mistakes a user can make are refused with a
clear message. Ralph takes the serial path the issue tracker takes: the engine appends the instructions to
whatever brief the policy returns."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from conftest import cli
from test_loop import EVAL, PASS, implementer, orchestrator, rows
from vibeserve.errors import VibeserveError
from vibeserve.report import write_report
from vibeserve.store import RunStore
from vibeserve.store.steering import HEADING, add_instruction, request_pause
from vibeserve.testing.toy_target import make_toy_target, write_trajectory
from vibeserve.ui import RunSource, create_app

ASK = "keep the answers exact; try reading the score file once at start"
LATER = "now look at the request parsing"


def vibeserve(runs: Path, *args: str) -> list[str]:
    """A `vibeserve` command line for a scripted step to run (another process writing the run's store)."""
    return [sys.executable, "-m", "vibeserve", *args, "--runs-dir", str(runs)]


def briefs(run_dir: Path) -> dict[int, str]:
    return {n: json.loads(task)["brief"] for n, task in rows(run_dir, "SELECT round, task FROM rounds WHERE round > 0")}


def test_issue_tracker_steered_and_paused_while_running_then_steered_again_and_resumed(tmp_path: Path) -> None:
    toy = make_toy_target(tmp_path / "toy", rounds=2, retries=1, repeats=1)
    runs = tmp_path / "runs"
    pick = orchestrator(1, "read the score once")
    pick["commands"] = [vibeserve(runs, "steer", "it", ASK)]  # given while the orchestrator decides round 1
    work = implementer("r001/a1/implementer", {"score.txt": "2.0\n"})
    work["commands"] = [vibeserve(runs, "pause", "it")]  # asked while round 1 is in flight
    traj = write_trajectory(tmp_path / "traj", [
        pick, work, orchestrator(2, "parse less"),
        implementer("r002/a1/implementer", {"score.txt": "3.0\n"}),
        {"key": "r*/a*/judge", "reply": PASS},
        {"key": "r*/a*/evaluator", "reply": EVAL},
    ])
    first = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "it",
                "--sandbox", "none", "--no-report")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "run paused" in first.stdout
    run_dir = runs / "it"
    # The round in flight finished; no further round started.
    assert rows(run_dir, "SELECT round, status FROM rounds") == [(0, "kept"), (1, "kept")]
    assert rows(run_dir, "SELECT status FROM run") == [("paused",)]
    assert HEADING in briefs(run_dir)[1] and ASK in briefs(run_dir)[1]  # its task was chosen after the steer

    for args, expect in [(("steer", "it", "  \n"), "the instruction is empty"),
                         (("pause", "it"), "not running (it is paused)")]:
        proc = cli(*args, "--runs-dir", str(runs))
        assert proc.returncode != 0 and expect in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    said = cli("steer", "it", LATER, "--runs-dir", str(runs))
    assert said.returncode == 0 and "resume" in said.stdout, said.stdout + said.stderr

    cli("resume", "it", "--runs-dir", str(runs), "--no-report", check=True)
    got = briefs(run_dir)
    assert LATER in got[2] and ASK not in got[2]  # each taken once, by the next round chosen
    assert LATER not in got[1]
    assert rows(run_dir, "SELECT kind, round FROM steering ORDER BY id") == [
        ("instruction", 1), ("pause", 1), ("instruction", 2)]
    assert rows(run_dir, "SELECT status FROM run") == [("finished",)]

    store = RunStore.open(run_dir)
    try:
        md = (write_report(store, tmp_path / "report").parent / "summary.md").read_text()
    finally:
        store.close()
    assert "## Steering" in md and ASK in md and "in round 2's brief" in md and "paused after round 1" in md
    page = TestClient(create_app(RunSource(runs)), base_url="http://127.0.0.1").get("/runs/it").text
    steering = page[page.index('<table id="steering">'):]
    assert ASK in steering and LATER in steering and "paused after round 1" in steering

    # What a user can get wrong: refused with a message naming what to do, nothing recorded.
    proc = cli("pause", "it", "--runs-dir", str(runs))
    assert proc.returncode != 0 and "finished; there is nothing to pause" in proc.stderr
    assert "Traceback" not in proc.stderr
    for call, expect in [(lambda: add_instruction(run_dir, "more"), "finished, so it has no next round"),
                         (lambda: add_instruction(runs / "nope", "more"), "no run at"),
                         (lambda: request_pause(runs / "nope"), "no run at")]:
        with pytest.raises(VibeserveError, match=expect):
            call()
    assert len(rows(run_dir, "SELECT * FROM steering")) == 3


def test_evolutionary_parallel_pause_lets_the_rounds_in_flight_finish(tmp_path: Path) -> None:
    toy = make_toy_target(tmp_path / "toy", rounds=3, retries=1, repeats=1)
    runs = tmp_path / "runs"
    step = implementer("r001/a1/implementer", {"score.txt": "2.0\n"})
    step["commands"] = [vibeserve(runs, "steer", "evo", ASK), vibeserve(runs, "pause", "evo")]
    traj = write_trajectory(tmp_path / "traj", [
        step,
        *(implementer(f"r00{n}/a1/implementer", {"score.txt": f"{n + 1}.0\n"}) for n in (2, 3)),
        {"key": "r*/a*/judge", "reply": PASS},
        {"key": "r*/a*/evaluator", "reply": EVAL},
    ])
    args = ("--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "evo", "--policy", "evolutionary",
            "--parallel", "2", "--sandbox", "none", "--no-report")
    first = cli("run", str(toy), *args)
    assert first.returncode == 0, first.stdout + first.stderr
    run_dir = runs / "evo"
    # Rounds 1 and 2 were in flight together when the pause came: both finish, round 3 never starts.
    assert [r[0] for r in rows(run_dir, "SELECT round FROM rounds")] == [0, 1, 2]
    assert rows(run_dir, "SELECT status FROM run") == [("paused",)]
    assert all(HEADING not in b for b in briefs(run_dir).values())

    cli("resume", "evo", "--runs-dir", str(runs), "--no-report", check=True)
    got = briefs(run_dir)
    assert set(got) == {1, 2, 3}
    assert ASK in got[3]  # the first round chosen after it was given
    assert rows(run_dir, "SELECT kind, round FROM steering ORDER BY id") == [("instruction", 3), ("pause", 2)]
    assert rows(run_dir, "SELECT status FROM run") == [("finished",)]
