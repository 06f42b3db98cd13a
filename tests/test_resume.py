"""Kill the run with SIGKILL at many steps of a round; resume must end in the state of an uninterrupted run.

Kills come from inside the run: a scripted agent's command, the accuracy checker or the benchmark sends
SIGKILL to its parent (the vibeserve process) the first time it reaches its kill point. Each agent step
also appends its key to a log, so the test can count how often each agent call really ran.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

from conftest import cli
from test_loop import EVAL, PASS
from vibeserve.target.scaffold import SERVER

BROKEN = SERVER.replace("return x * x + 1", "return x * x")

# Appends argv[2] to the log argv[1]; with argv[3] (a marker file), SIGKILLs its parent once.
STEP = (
    "import os, sys, pathlib\n"
    "open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')\n"
    "if len(sys.argv) > 3 and not pathlib.Path(sys.argv[3]).exists():\n"
    "    pathlib.Path(sys.argv[3]).touch(); os.kill(os.getppid(), 9)\n"
)

# Put at the top of a check: on its Nth run (counted in a file), SIGKILL the parent.
GATE_KILL = (
    "import os as _os, pathlib as _pl\n"
    "_c = _pl.Path({counter!r}); _n = len(_c.read_text().splitlines()) + 1 if _c.exists() else 1\n"
    "_c.write_text('x\\n' * _n)\n"
    "if _n == {nth}: _os.kill(_os.getppid(), 9)\n"
)


def trajectory(make, log: Path, markers: Path | None) -> Path:
    def step(key: str, kill: bool = False, **rest) -> dict:
        argv = ["python", "-c", STEP, str(log), key]
        if kill and markers is not None:
            argv.append(str(markers / key.replace("/", "-")))
        return {"key": key, "commands": [argv], **rest}

    def orch(n: int, title: str, kill: bool = False) -> dict:
        return step(f"r{n:03d}/orchestrator", kill, mcp=[
            {"tool": "create_issue", "arguments": {"title": title, "hypothesis": title,
                                                   "acceptance_criteria": ["faster"], "priority": 2}},
            {"tool": "pick_next", "arguments": {"issue_id": n, "start_commit": "best"}},
            {"tool": "write_memory", "arguments": {"text": f"after round {n}: {title}\n"}},
        ], reply={"summary": title})

    def impl(key: str, files: dict, kill: bool = False) -> dict:
        return step(key, kill, files=files, reply={"summary": "edit"})

    return make([
        orch(1, "one", kill=True),                                      # killed after MCP changes, before recorded
        impl("r001/a1/implementer", {"score.txt": "2.0\n"}, kill=True),  # killed with uncommitted edits
        step("r001/a1/judge", reply=PASS),                               # (accuracy gate killed before this)
        step("r001/a1/evaluator", kill=True, reply=EVAL),
        orch(2, "two"),
        impl("r002/a1/implementer", {"score.txt": "3.0\n"}),
        step("r002/a1/judge", kill=True, reply=PASS),
        step("r002/a1/evaluator", reply=EVAL),                           # (benchmark gate killed before this)
        orch(3, "three"),
        impl("r003/a1/implementer", {"server.py": BROKEN}),
        impl("r003/a2/implementer", {"server.py": SERVER, "score.txt": "2.5\n"}),
        step("r003/a2/judge", reply=PASS),
        step("r003/a2/evaluator", reply=EVAL),
    ], name="traj-kill" if markers else "traj-plain")


def final_state(run_dir: Path) -> dict:
    conn = sqlite3.connect(run_dir / "run.db")
    repo = run_dir / "repo"

    def tree(sha: str | None) -> str | None:
        if sha is None:
            return None
        return subprocess.run(["git", "rev-parse", f"{sha}^{{tree}}"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()

    rounds = [(r, s, m, a, tree(c)) for r, s, m, a, c in
              conn.execute("SELECT round, status, metric, attempts, candidate FROM rounds ORDER BY round")]
    state = {
        "rounds": rounds,
        "issues": conn.execute("SELECT id, title, status, rounds, notes FROM issues ORDER BY id").fetchall(),
        "gates": conn.execute("SELECT round, attempt, gate, passed, metric FROM gates ORDER BY round, attempt, gate")
        .fetchall(),
        "calls": sorted(k for (k,) in conn.execute("SELECT key FROM agent_calls")),
        "run": conn.execute("SELECT status, stop_reason, best_metric, baseline_metric FROM run").fetchone(),
        "best_tree": tree(conn.execute("SELECT best_commit FROM run").fetchone()[0]),
        "memory": (run_dir / "memory.md").read_text(),
        "processes": conn.execute("SELECT COUNT(*) FROM processes").fetchone()[0],
    }
    conn.close()
    return json.loads(json.dumps(state))


def add_gate_kills(toy: Path, counters: Path) -> None:
    for check, nth in (("accuracy.py", 2), ("bench.py", 5)):  # round 1's accuracy; round 2's first bench run
        path = toy / "checks" / check
        path.write_text(GATE_KILL.format(counter=str(counters / check), nth=nth) + path.read_text())


def test_resume_after_sigkill_at_every_step_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    from vibeserve.testing.toy_target import make_toy_target, write_trajectory

    def make(calls: list[dict], name: str) -> Path:
        return write_trajectory(tmp_path / name, calls)

    # the uninterrupted run
    plain_target = make_toy_target(tmp_path / "plain")
    plain_log = tmp_path / "plain.log"
    plain = trajectory(make, plain_log, markers=None)
    # No sandbox: a check's kill must reach the vibeserve process, which a gate sandbox's PID namespace hides
    # (test_sandbox kills a sandboxed run mid-gate and resumes it).
    cli("run", str(plain_target), "--trajectory", str(plain), "--runs-dir", str(tmp_path / "runs"), "--run-id",
        "plain", "--no-report", "--sandbox", "none", check=True)
    expected = final_state(tmp_path / "runs" / "plain")

    # the same run, killed at six different steps
    killed_target = make_toy_target(tmp_path / "killed")
    markers = tmp_path / "markers"
    markers.mkdir()
    add_gate_kills(killed_target, markers)
    log = tmp_path / "killed.log"
    traj = trajectory(make, log, markers)
    out = cli("run", str(killed_target), "--trajectory", str(traj), "--runs-dir", str(tmp_path / "runs"),
              "--run-id", "killed", "--no-report", "--sandbox", "none")
    kills = 0
    while out.returncode == -signal.SIGKILL:
        kills += 1
        assert kills <= 10, "resume does not make progress"
        out = cli("resume", "killed", "--runs-dir", str(tmp_path / "runs"), "--no-report")
    assert out.returncode == 0, out.stderr
    assert kills == 6  # orchestrator, implementer, accuracy gate, evaluator, judge, benchmark gate

    got = final_state(tmp_path / "runs" / "killed")
    assert got["rounds"] == expected["rounds"]
    assert got["issues"] == expected["issues"]  # no issue filed twice by the re-run orchestrator call
    assert got["gates"] == expected["gates"]
    assert got["calls"] == expected["calls"]
    assert got == expected

    # every agent call ran once, except the four killed mid-call, which ran again exactly once
    counts = Counter(log.read_text().split())
    killed_calls = {"r001/orchestrator", "r001/a1/implementer", "r001/a1/evaluator", "r002/a1/judge"}
    assert {k for k, c in counts.items() if c == 2} == killed_calls
    assert all(c == 1 for k, c in counts.items() if k not in killed_calls)
    assert Counter(plain_log.read_text().split()) == Counter(dict.fromkeys(counts, 1))
