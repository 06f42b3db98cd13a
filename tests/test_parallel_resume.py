"""SIGKILL a parallel run with rounds in flight, resume it: the same archive as an uninterrupted run, and no
agent call recorded before a kill runs again.

As in test_resume: kills come from inside the run (an agent's command or the benchmark sends SIGKILL to the
vibeserve process the first time it reaches its kill point), and every agent call appends its key to a log.
"""

from __future__ import annotations

import signal
import sqlite3
from collections import Counter
from pathlib import Path

from conftest import cli
from test_loop import EVAL, PASS
from test_parallel import STATIC, final_state, run_config, start
from test_resume import GATE_KILL, STEP
from vibeserve.target.scaffold import SERVER

BROKEN = SERVER.replace("return x * x + 1", "return x * x")
PASSED = ("r001/a1", "r002/a1", "r003/a2", "r004/a2", "r005/a1")  # the attempts that reach the judge


def trajectory(make, log: Path, markers: Path | None) -> Path:
    def step(key: str, kill: bool = False, **rest) -> dict:
        argv = ["python", "-c", STEP, str(log), key]
        if kill and markers is not None:
            argv.append(str(markers / key.replace("/", "-")))
        return {"key": key, "commands": [argv], **rest}

    def impl(key: str, files: dict, kill: bool = False, **rest) -> dict:
        return step(key, kill, files=files, reply={"summary": f"edited {', '.join(files)}"}, **rest)

    return make([
        impl("r001/a1/implementer", {"score.txt": "2.0\n"}, mcp=[{"tool": "report_techniques", "arguments": STATIC}]),
        impl("r002/a1/implementer", {"score.txt": "2.0\n"}, kill=True, sleep_s=2.0),  # rounds 1 and 3 in flight
        impl("r003/a1/implementer", {"server.py": BROKEN, "score.txt": "9.0\n"}),
        impl("r003/a2/implementer", {"server.py": SERVER, "score.txt": "2.5\n"}),
        impl("r004/a1/implementer", {"score.txt": "2.0\n"}),
        impl("r004/a2/implementer", {"score.txt": "4.0\n", "D.txt": "d\n"}, kill=True),
        impl("r005/a1/implementer", {"score.txt": "3.5\n", "E.txt": "e\n"}),
        *[step(f"{a}/judge", reply=PASS) for a in PASSED],
        *[step(f"{a}/evaluator", kill=a == "r003/a2", reply=EVAL) for a in PASSED],
    ], name="traj-kill" if markers else "traj-plain")


def recorded_calls(run_dir: Path) -> set[str]:
    conn = sqlite3.connect(run_dir / "run.db")
    try:
        return {k for (k,) in conn.execute("SELECT key FROM agent_calls")}
    finally:
        conn.close()


def test_a_parallel_run_killed_mid_flight_resumes_to_the_uninterrupted_archive(tmp_path: Path) -> None:
    from vibeserve.testing.toy_target import make_toy_target, write_trajectory

    def make(calls: list[dict], name: str) -> Path:
        return write_trajectory(tmp_path / name, calls)

    runs, config = tmp_path / "runs", run_config(tmp_path)
    plain_log = tmp_path / "plain.log"
    out = start(make_toy_target(tmp_path / "plain"), trajectory(make, plain_log, None), runs, "plain", config)
    assert out.returncode == 0, out.stdout + out.stderr
    expected = final_state(runs / "plain")

    killed_target = make_toy_target(tmp_path / "killed")
    markers = tmp_path / "markers"
    markers.mkdir()
    bench = killed_target / "checks" / "bench.py"  # the 7th benchmark run: a gate killed with others in flight
    bench.write_text(GATE_KILL.format(counter=str(markers / "bench"), nth=7) + bench.read_text())
    log = tmp_path / "killed.log"
    out = start(killed_target, trajectory(make, log, markers), runs, "killed", config)
    kills: list[tuple[int, set[str]]] = []  # per kill: calls logged so far, calls recorded in the store
    while out.returncode == -signal.SIGKILL:
        assert len(kills) < 10, "resume does not make progress"
        kills.append((len(log.read_text().split()), recorded_calls(runs / "killed")))
        out = cli("resume", "killed", "--runs-dir", str(runs), "--no-report")
    assert out.returncode == 0, out.stdout + out.stderr
    # two implementers, an evaluator and a benchmark gate; two kill points reached at the same moment by
    # rounds side by side end the same process once
    assert 3 <= len(kills) <= 4

    got = final_state(runs / "killed")
    assert got == expected, "\n".join(f"{k}: killed {a}\n{' ' * len(k)}  plain  {b}" for k in got
                                      for a, b in zip(got[k], expected[k], strict=False) if a != b)
    # no call recorded before a kill ran again after it (calls cut short by a kill did, once)
    calls = log.read_text().split()
    for logged, recorded in kills:
        assert not recorded & set(calls[logged:])
    assert len(kills[-1][1]) >= 5  # the last kill came with many calls recorded
    assert len(calls) > len(set(calls))  # ... and some were cut short and ran again
    plain = Counter(plain_log.read_text().split())
    assert set(calls) == set(plain) and all(c == 1 for c in plain.values())
