"""Parallel rounds (--parallel N) on the toy target: a replay ends with the same archive every time, rounds
are committed in order whatever order they finish in, and a benchmark gate never shares the machine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import cli
from test_loop import EVAL, PASS, implementer, rows
from vibeserve.target.scaffold import SERVER

BROKEN = SERVER.replace("return x * x + 1", "return x * x")
STATIC = {"batching": "static", "kv_cache": "none", "precision": "fp32", "decoding": "plain", "kernels": "eager"}


# Round 2's implementer waits until its run's store holds round 1's evaluator call and round 3's second
# implementer call: they can only get there if rounds run side by side (a serial loop would wait here for
# good, and the command's own deadline fails the test). Waiting on them, not sleeping, keeps the order the
# same however busy the machine is.
WAIT_FOR_OTHERS = """
import pathlib, sqlite3, sys, time
run = next(p for p in pathlib.Path.cwd().parents if (p / "run.db").exists())
want = {"r001/a1/evaluator", "r003/a2/implementer"}
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    conn = sqlite3.connect(f"file:{run / 'run.db'}?mode=ro", uri=True)
    try:
        if want <= {k for (k,) in conn.execute("SELECT key FROM agent_calls")}:
            sys.exit(0)
    except sqlite3.OperationalError:
        pass
    finally:
        conn.close()
    time.sleep(0.2)
sys.exit("rounds 1 and 3 never got past their agents while round 2's implementer ran")
"""


def calls(extra: list[dict] | None = None) -> list[dict]:
    """Five rounds; round 2's implementer waits until rounds 1 and 3 are past their agents."""
    return [
        {**implementer("r001/a1/implementer", {"score.txt": "2.0\n"}),
         "mcp": [{"tool": "report_techniques", "arguments": STATIC}]},
        # the same change as round 1 from the same parent: round 2's task was chosen before round 1 was
        # committed, so it is not a repeat of anything in its archive, even though round 1 is in by now
        {**implementer("r002/a1/implementer", {"score.txt": "2.0\n"}),
         "commands": [["python", "-c", WAIT_FOR_OTHERS]]},
        implementer("r003/a1/implementer", {"server.py": BROKEN, "score.txt": "9.0\n"}),
        implementer("r003/a2/implementer", {"server.py": SERVER, "score.txt": "2.5\n"}),
        # chosen after round 1 was committed: 2.0 again is a repeat (from the seed) or empty (from round 1)
        implementer("r004/a1/implementer", {"score.txt": "2.0\n"}),
        implementer("r004/a2/implementer", {"score.txt": "4.0\n", "D.txt": "d\n"}),
        implementer("r005/a1/implementer", {"score.txt": "3.5\n", "E.txt": "e\n"}),
        *(extra or []),
        {"key": "r*/a*/judge", "reply": PASS},
        {"key": "r*/a*/evaluator", "reply": EVAL},
    ]


def tree(run_dir: Path, sha: str | None) -> str | None:
    if sha is None:
        return None
    return subprocess.run(["git", "rev-parse", f"{sha}^{{tree}}"], cwd=run_dir / "repo", capture_output=True,
                          text=True, check=True).stdout.strip()


def archive(run_dir: Path) -> list[tuple]:
    """The archive as far as it is deterministic: commits by their trees (commit ids carry times)."""
    return [(r, a, status, metric, cell, feedback, tree(run_dir, commit), tree(run_dir, parent),
             [tree(run_dir, i) for i in json.loads(insp)])
            for r, a, status, metric, cell, feedback, commit, parent, insp in rows(
                run_dir, "SELECT round, attempt, status, metric, cell, feedback, commit_sha, parent, inspirations"
                         " FROM evo_candidates ORDER BY round, attempt")]


def final_state(run_dir: Path) -> dict:
    return json.loads(json.dumps({
        "archive": archive(run_dir),
        "rounds": [(r, s, m, a, tree(run_dir, c)) for r, s, m, a, c in rows(
            run_dir, "SELECT round, status, metric, attempts, candidate FROM rounds ORDER BY round")],
        "gates": rows(run_dir, "SELECT round, attempt, gate, passed, metric FROM gates ORDER BY round, attempt, gate"),
        "calls": sorted(k for (k,) in rows(run_dir, "SELECT key FROM agent_calls")),
        "run": rows(run_dir, "SELECT status, stop_reason, best_metric FROM run"),
        "best": tree(run_dir, rows(run_dir, "SELECT best_commit FROM run")[0][0]),
    }))


def run_config(tmp_path: Path) -> Path:
    path = tmp_path / "run.toml"
    path.write_text("secret_seed = 11\n")  # the same parent draws in both runs
    return path


def start(toy: Path, traj: Path, runs: Path, run_id: str, config: Path, *more: str) -> subprocess.CompletedProcess:
    return cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", run_id,
               "--policy", "evolutionary", "--rounds", "5", "--parallel", "3", "--config", str(config),
               "--no-report", "--sandbox", "none", *more)


def test_parallel_runs_replay_to_the_same_archive_and_commit_in_round_order(
        toy: Path, trajectory, tmp_path: Path) -> None:
    traj = trajectory(calls())
    runs, config = tmp_path / "runs", run_config(tmp_path)
    first = start(toy, traj, runs, "one", config)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "round budget reached (5 rounds)" in first.stdout
    second = start(toy, traj, runs, "two", config)
    assert second.returncode == 0, second.stdout + second.stderr
    one, two = final_state(runs / "one"), final_state(runs / "two")
    assert one == two

    run_dir = runs / "one"
    statuses = rows(run_dir, "SELECT round, status, metric, attempts FROM rounds ORDER BY round")
    assert [r for r, *_ in statuses] == [0, 1, 2, 3, 4, 5]  # the round budget, no more
    assert statuses[1] == (1, "kept", 2.0, 1)
    # round 2 was told the baseline's 1.0 was the best, but is committed after round 1: 2.0 is no gain
    assert statuses[2] == (2, "accepted", 2.0, 1)
    assert statuses[3] == (3, "kept", 2.5, 2)
    cands = {(r, a): (status, feedback) for r, a, status, _, _, feedback, *_ in one["archive"]}
    assert cands[2, 1][0] == "passed"  # admitted: round 1 was not in the archive round 2 was chosen from
    assert cands[3, 1][0] == "failed" and cands[3, 1][1].startswith("accuracy gate")
    assert cands[4, 1][0] == "refused"  # chosen after round 1 was committed: a repeat of it
    assert cands[4, 2][0] == "passed"

    # rounds ran side by side: round 1 finished, and round 3 got its accuracy verdict, while round 2's
    # implementer slept
    finished = dict(rows(run_dir, "SELECT key, finished_at FROM agent_calls"))
    assert finished["r001/a1/evaluator"] < finished["r002/a1/implementer"]
    assert finished["r003/a2/implementer"] < finished["r002/a1/implementer"]
    # ... but were committed in round order
    done = [r for r, _ in rows(run_dir, "SELECT round, finished_at FROM rounds WHERE round > 0 ORDER BY finished_at")]
    assert done == [1, 2, 3, 4, 5]

    # the scheduler's rule: nothing else gate-like runs while a benchmark does
    held = [(g, json.loads(rep)["slot"]) for g, rep in rows(run_dir, "SELECT gate, report FROM gates WHERE round > 0")]
    assert held and all("queued_s" in s for _, s in held)
    for gate, slot in held:
        if gate != "benchmark":
            continue
        others = [s for _, s in held if s is not slot]
        assert all(o["held_until"] <= slot["held_from"] or o["held_from"] >= slot["held_until"] for o in others)


def test_parallel_is_refused_for_a_policy_that_chains_its_rounds(toy: Path, trajectory, tmp_path: Path) -> None:
    traj = trajectory(calls())
    out = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(tmp_path / "runs"), "--policy", "ralph",
              "--parallel", "2", "--sandbox", "none")
    assert out.returncode == 2
    assert "--parallel 2 needs --policy evolutionary" in out.stdout + out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    out = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(tmp_path / "runs"), "--policy",
              "evolutionary", "--parallel", "0", "--sandbox", "none")
    assert out.returncode == 2 and "--parallel 0: give at least 1" in out.stdout + out.stderr


# Appends the command line of the process that ran it (its parent) to a file.
WHO = ("import os, sys\n"
       "open(sys.argv[1], 'a').write(open(f'/proc/{os.getppid()}/cmdline').read().replace('\\0', ' ') + '\\n')\n")


def test_parallel_on_a_local_ray_instance(toy: Path, trajectory, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'vibeserve[ray]')")
    agents, gates = tmp_path / "agents.txt", tmp_path / "gates.txt"
    who = ["python", "-c", WHO, str(agents)]
    traj = trajectory([
        {**implementer("r001/a1/implementer", {"score.txt": "2.0\n"}), "commands": [who]},
        {**implementer("r002/a1/implementer", {"score.txt": "3.0\n", "B.txt": "b\n"}), "commands": [who]},
        {"key": "r*/a*/judge", "reply": PASS},
        {"key": "r*/a*/evaluator", "reply": EVAL},
    ])
    runs = tmp_path / "runs"
    groups = tmp_path / "groups.txt"  # the process groups the run store lists while a benchmark runs
    bench = toy / "checks" / "bench.py"
    bench.write_text("import os as _o, sqlite3 as _s\n"
                     f"open({str(gates)!r}, 'a').write(open(f'/proc/{{_o.getppid()}}/cmdline').read() + '\\n')\n"
                     f"_c = _s.connect({str(runs / 'ray' / 'run.db')!r})\n"
                     f"open({str(groups)!r}, 'a').write(repr(_c.execute('SELECT what FROM processes').fetchall()) + '\\n')\n"
                     + bench.read_text())
    out = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "ray",
              "--policy", "evolutionary", "--rounds", "2", "--parallel", "2", "--ray", "local",
              "--no-report", "--sandbox", "none", timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert rows(runs / "ray", "SELECT round, status, metric FROM rounds ORDER BY round") == [
        (0, "kept", 1.0), (1, "kept", 2.0), (2, "kept", 3.0)]
    # both implementers ran in Ray workers, and so did every benchmark (the baseline's too)
    ran_agents = agents.read_text().splitlines()
    assert len(ran_agents) == 2 and all("ray::" in line or "default_worker" in line for line in ran_agents)
    in_ray = ["ray::" in line or "default_worker" in line for line in gates.read_text().splitlines()]
    assert len(in_ray) >= 3 and all(in_ray)
    # ... and each recorded its candidate's process group, with its host, while the group lived
    import socket
    listed = groups.read_text().splitlines()
    assert listed and all(f"benchmark in a Ray task [host={socket.gethostname()}]" in line for line in listed)
    assert rows(runs / "ray", "SELECT COUNT(*) FROM processes") == [(0,)]
