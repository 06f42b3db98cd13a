"""A run's life through the CLI as an unlucky user lives it: a second process, interrupts, damage to the
run's files, agents that leave odd things behind, and exit codes that say how the run ended."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import cli
from test_loop import EVAL, PASS, implementer, orchestrator, rows
from test_sandbox import leftovers, no_leftovers

FAST = [{"key": "r*/a*/judge", "reply": PASS}, {"key": "r*/a*/evaluator", "reply": EVAL}]


def start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "vibeserve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for(path: Path, text: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.mark.parametrize(("sig", "code", "sandbox"), [(signal.SIGTERM, 143, "bwrap"), (signal.SIGINT, 130, "none")])
def test_one_owner_per_run_and_an_interrupt_stops_everything_and_says_how_to_resume(
        toy: Path, trajectory, tmp_path: Path, sig: int, code: int, sandbox: str) -> None:
    if sandbox == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    marker = f"vibeserve-busy-{uuid.uuid4().hex}"
    traj = trajectory([
        orchestrator(1, "Slow one"),
        # The implementer's shell command: says it started, then works for a long time.
        {"key": "r001/a1/implementer", "commands": [
            ["python", "-c", f"import time; print('started', flush=True); time.sleep(120)  # {marker}"]],
         "reply": {"summary": "slow"}},
        *FAST,
    ])
    runs = tmp_path / "runs"
    first = start("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "busy",
                  "--rounds", "1", "--sandbox", sandbox)
    wait_for(runs / "busy" / "transcripts" / "r001-a1-implementer.logs" / "command-0.stdout", "started")

    # A second process is told who owns the run, and changes nothing.
    before = rows(runs / "busy", "SELECT round, status FROM rounds")
    for args in (["resume", "busy"], ["run", str(toy), "--trajectory", str(traj), "--run-id", "busy"]):
        out = cli(*args, "--runs-dir", str(runs))
        assert out.returncode == 2, out.stdout + out.stderr
        said = " ".join(out.stderr.split())
        assert f"in use by process {first.pid}" in said and "Traceback" not in out.stderr
    assert "choose another --run-id" in said
    assert rows(runs / "busy", "SELECT round, status FROM rounds") == before

    first.send_signal(sig)
    _, err = first.communicate(timeout=60)
    assert first.returncode == code, err
    assert "interrupted; continue with `vibeserve resume busy`" in err and "Traceback" not in err
    assert no_leftovers(marker) == []
    assert rows(runs / "busy", "SELECT status, stop_reason FROM run") == [
        ("interrupted", f"interrupted ({signal.Signals(sig).name})")]
    assert rows(runs / "busy", "SELECT COUNT(*) FROM processes") == [(0,)]

    # The lock went with the process: resume owns the run now and finishes it.
    fast = trajectory([orchestrator(1, "Slow one"), implementer("r001/a1/implementer", {"score.txt": "2\n"}),
                       *FAST], name="fast")
    conn = sqlite3.connect(runs / "busy" / "run.db")
    with conn:  # the same run, replayed by a quicker agent
        conn.execute("UPDATE run SET config = json_set(config, '$.harness_options.trajectory', ?)", (str(fast),))
    conn.close()
    out = cli("resume", "busy", "--runs-dir", str(runs))
    assert out.returncode == 0, out.stdout + out.stderr
    assert rows(runs / "busy", "SELECT status FROM run") == [("finished",)]


def test_a_nested_git_repository_fails_the_attempt_and_the_run_goes_on(toy: Path, trajectory,
                                                                      tmp_path: Path) -> None:
    traj = trajectory([
        orchestrator(1, "Vendor a library"),
        {"key": "r001/a1/implementer", "commands": [["git", "init", "-q", "vendored"]],
         "files": {"score.txt": "2\n"}, "reply": {"summary": "vendored a repo"}},
        implementer("r001/a2/implementer", {"score.txt": "2\n"}),
        *FAST,
    ])
    out = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(tmp_path / "runs"), "--run-id", "n",
              "--rounds", "1", "--sandbox", "none")
    assert out.returncode == 0, out.stdout + out.stderr
    run_dir = tmp_path / "runs" / "n"
    assert rows(run_dir, "SELECT round, status, attempts FROM rounds") == [(0, "kept", 0), (1, "kept", 2)]
    prompt = (run_dir / "transcripts" / "r001-a2-implementer.jsonl").read_text()
    assert "could not be committed" in prompt and "vendored" in prompt


def test_a_judge_that_passes_but_says_reward_hacking_rejects(toy: Path, trajectory, tmp_path: Path) -> None:
    traj = trajectory([
        orchestrator(1, "Cache answers"),
        implementer("r001/a*/implementer", {"score.txt": "5\n"}),
        {"key": "r001/a1/judge", "reply": {**PASS, "reward_hacking": True, "reasons": "keys answers on prompts"}},
        {"key": "r001/a2/judge", "reply": {**PASS, "criteria_met": False, "reasons": "criteria not met"}},
        *FAST,
    ])
    out = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(tmp_path / "runs"), "--run-id", "j",
              "--rounds", "1", "--sandbox", "none")
    run_dir = tmp_path / "runs" / "j"
    assert rows(run_dir, "SELECT round, status FROM rounds") == [(0, "kept"), (1, "rejected")]
    assert out.returncode == 0
    second = (run_dir / "transcripts" / "r001-a2-implementer.jsonl").read_text()
    assert "reward_hacking = true" in second and "keys answers on prompts" in second
    (reason,) = rows(run_dir, "SELECT json_extract(result, '$.reason') FROM rounds WHERE round = 1")[0]
    assert "criteria_met = false" in reason


def test_an_unknown_harness_option_and_an_unreachable_endpoint_stop_before_the_run(toy: Path, trajectory,
                                                                                   tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    out = cli("run", str(toy), "--trajectory", str(trajectory([])), "--runs-dir", str(runs), "--run-id", "o",
              "-O", "max_step=3")
    assert out.returncode == 2
    assert "the scripted harness has no option 'max_step'; its options are: trajectory" in " ".join(out.stderr.split())
    out = cli("run", str(toy), "--harness", "openai", "-O", "max_step=3", "--runs-dir", str(runs), "--run-id", "o")
    assert out.returncode == 2 and "max_steps" in out.stderr  # the known options, to spot the typo
    dead = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there
    out = cli("run", str(toy), "--harness", "openai", "-O", f"base_url={dead}", "--runs-dir", str(runs),
              "--run-id", "o")
    assert out.returncode == 2 and dead in out.stderr and "cannot be reached" in out.stderr
    assert not (runs / "o").exists()


def test_exit_codes_say_when_a_run_ends_with_nothing(toy: Path, trajectory, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    failing = trajectory([orchestrator(1, "x"), {"key": "r001/a*/implementer", "fail": "error"}], name="f")
    out = cli("run", str(toy), "--trajectory", str(failing), "--runs-dir", str(runs), "--run-id", "f",
              "--rounds", "1", "--sandbox", "none")
    assert out.returncode == 1 and "every round failed (1 of 1)" in out.stderr, out.stdout + out.stderr
    server = toy / "seed" / "server.py"
    server.write_text(server.read_text().replace("return x * x + 1", "return x"))
    out = cli("run", str(toy), "--trajectory", str(failing), "--runs-dir", str(runs), "--run-id", "b",
              "--rounds", "1", "--sandbox", "none")
    assert out.returncode == 1 and "ended without a measured baseline" in out.stderr, out.stdout + out.stderr


def test_a_damaged_store_is_named_and_left_alone(toy: Path, trajectory, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    traj = trajectory([orchestrator(1, "a"), implementer("r001/a1/implementer", {"score.txt": "2\n"}), *FAST])
    cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "d", "--rounds", "1",
        "--sandbox", "none", check=True)
    run_dir = runs / "d"

    # The run branch deleted: a finished run stays finished; an interrupted one gets it back from the store.
    subprocess.run(["git", "branch", "-D", "vibeserve/best"], cwd=run_dir / "repo", check=True, capture_output=True)
    out = cli("resume", "d", "--runs-dir", str(runs))
    assert out.returncode == 0 and "already finished" in out.stdout
    assert rows(run_dir, "SELECT status FROM run") == [("finished",)]
    conn = sqlite3.connect(run_dir / "run.db")
    with conn:
        conn.execute("UPDATE run SET status = 'interrupted'")
    (best,) = conn.execute("SELECT best_commit FROM run").fetchone()
    conn.close()
    out = cli("resume", "d", "--runs-dir", str(runs))
    assert out.returncode == 0 and "restored it at" in out.stdout, out.stdout + out.stderr
    assert subprocess.run(["git", "rev-parse", "vibeserve/best"], cwd=run_dir / "repo", capture_output=True,
                          text=True).stdout.strip() == best

    # One flipped character in the recorded manifest: the store is blamed, not the target.
    conn = sqlite3.connect(run_dir / "run.db")
    with conn:
        conn.execute("UPDATE run SET status = 'interrupted', manifest = replace(manifest, 'a', 'b')")
    conn.close()
    before = (run_dir / "run.db").read_bytes()
    out = cli("resume", "d", "--runs-dir", str(runs))
    assert out.returncode == 2 and "manifest of the target is damaged" in " ".join(out.stderr.split())
    assert "store, not the target" in " ".join(out.stderr.split())
    assert (run_dir / "run.db").read_bytes() == before

    # An empty store is not turned into a new one.
    (run_dir / "run.db").write_bytes(b"")
    for cmd in ("resume", "status"):
        out = cli(cmd, "d", "--runs-dir", str(runs))
        assert out.returncode == 2 and "is empty" in out.stderr and "Traceback" not in out.stderr
    assert (run_dir / "run.db").stat().st_size == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
def test_a_full_disk_is_one_line_and_a_non_zero_exit(toy: Path, trajectory, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        (small / "filler").write_bytes(b"x" * (1024 * 1024 - 64 * 1024))
        traj = trajectory([orchestrator(1, "a"), implementer("r001/a1/implementer", {"score.txt": "2\n"}), *FAST])
        out = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(small / "runs"), "--run-id", "full",
                  "--rounds", "1", "--sandbox", "none")
        assert out.returncode == 1, out.stdout + out.stderr
        assert "the disk is full" in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) <= 3
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_rounds_in_flight_stop_on_an_interrupt_and_their_agents_are_stopped_after_a_kill(
        toy: Path, trajectory, tmp_path: Path) -> None:
    """Two rounds in flight, each with an agent command working: Ctrl-C stops both and records neither; a
    kill -9 of the run leaves both commands behind, and resume stops them before it goes on."""
    marker = f"vibeserve-inflight-{uuid.uuid4().hex}"

    def slow(key: str) -> dict:
        return {"key": key, "commands": [
            ["python", "-c", f"import time; print('started', flush=True); time.sleep(300)  # {marker}"]],
            "reply": {"summary": "slow"}}

    traj = trajectory([slow("r001/a1/implementer"), slow("r002/a1/implementer"), *FAST])
    runs = tmp_path / "runs"
    logs = [runs / "par" / "transcripts" / f"r00{n}-a1-implementer.logs" / "command-0.stdout" for n in (1, 2)]
    args = ["--runs-dir", str(runs), "--no-report"]

    def both_working() -> None:
        for log in logs:
            wait_for(log, "started")
            log.unlink()  # the next call of the same key writes it anew
        what = {w.split(":")[0] for (w,) in rows(runs / "par", "SELECT what FROM processes")}
        assert what == {"r001/a1/implementer", "r002/a1/implementer"}

    first = start("run", str(toy), "--trajectory", str(traj), "--run-id", "par", "--rounds", "2",
                  "--policy", "evolutionary", "--parallel", "2", "--sandbox", "none", *args)
    both_working()
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    assert "interrupted; continue with `vibeserve resume par`" in err and "Traceback" not in err
    assert no_leftovers(marker) == []
    assert rows(runs / "par", "SELECT COUNT(*) FROM processes") == [(0,)]
    assert rows(runs / "par", "SELECT key FROM agent_calls WHERE role = 'implementer'") == []

    second = start("resume", "par", *args)  # the calls were not recorded: both run again
    both_working()
    second.kill()
    second.communicate(timeout=60)
    assert len(leftovers(marker)) == 2  # nothing of the run is left to stop them ...

    fast = trajectory([implementer(f"r00{n}/a1/implementer", {"score.txt": f"{n + 1}\n"}) for n in (1, 2)]
                      + FAST, name="fast")
    conn = sqlite3.connect(runs / "par" / "run.db")
    with conn:
        conn.execute("UPDATE run SET config = json_set(config, '$.harness_options.trajectory', ?)", (str(fast),))
    conn.close()
    out = cli("resume", "par", *args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "stopping leftover process group" in out.stderr
    assert no_leftovers(marker) == []  # ... but resume, before anything else
    assert rows(runs / "par", "SELECT round, status FROM rounds ORDER BY round") == [
        (0, "kept"), (1, "kept"), (2, "kept")]
    assert rows(runs / "par", "SELECT COUNT(*) FROM processes") == [(0,)]
