"""Who is to blame for a failure, what a failure says, and the limits a candidate runs under."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli
from test_loop import EVAL, PASS, orchestrator, rows
from vibeserve.errors import TargetError
from vibeserve.gates.checks import accuracy_gate
from vibeserve.gates.load import LoadMeter
from vibeserve.gates.server import CandidateServer, ServerNotReady
from vibeserve.jail import CandidateJail
from vibeserve.limits import CandidateGroup, CandidateLimits
from vibeserve.process import read_tail
from vibeserve.sandbox import SandboxMode
from vibeserve.target.scaffold import SERVER
from vibeserve.target.spec import load_target
from vibeserve.target.validate import hidden_paths, still_running, validate_target

CHECKER = '''\
import argparse, json, sys
ap = argparse.ArgumentParser(); ap.add_argument("--url"); ap.add_argument("--report"); a = ap.parse_args()
{body}
'''


def set_checker(toy: Path, body: str) -> None:
    (toy / "checks" / "accuracy.py").write_text(CHECKER.format(body=body))


@pytest.mark.parametrize(("body", "passed", "blamed_on_target", "words"), [
    ('json.dump({"passed": True}, open(a.report, "w")); sys.exit(0)', True, False, ""),
    ('json.dump({"passed": False, "summary": "3 of 8 wrong"}, open(a.report, "w")); sys.exit(1)', False, False,
     "the accuracy checker failed it: 3 of 8 wrong"),
    ("sys.exit(0)", False, True, "wrote no report"),  # exit 0 alone no longer passes
    ('json.dump({"ok": True}, open(a.report, "w")); sys.exit(0)', False, True, 'no boolean "passed"'),
    ('json.dump({"passed": False}, open(a.report, "w")); sys.exit(0)', False, True, "0 must pass, 1 must fail"),
    ('json.dump({"passed": False}, open(a.report, "w")); sys.exit(3)', False, True, "exited 3"),
    ("raise KeyError('cases')", False, True, "crashed (exit 1): KeyError: 'cases'"),
])
def test_the_checker_contract_decides_who_is_to_blame(toy: Path, tmp_path: Path, body: str, passed: bool,
                                                      blamed_on_target: bool, words: str) -> None:
    set_checker(toy, body)
    with CandidateServer(load_target(toy), toy / "seed", tmp_path / "logs", "server") as server:
        verdict = accuracy_gate(server.target, server, "abc", tmp_path / "logs")
    assert (verdict.passed, verdict.target_error) == (passed, blamed_on_target)
    assert words in verdict.reason and "\n" not in verdict.reason


def test_a_crashing_checker_stops_the_run_without_spending_the_candidates_retries(
        toy: Path, trajectory, tmp_path: Path) -> None:
    # The checker trips over an answer it did not expect; that is the target's bug, not the candidate's.
    set_checker(toy, '''import urllib.request
y = json.load(urllib.request.urlopen(a.url + "/compute?x=2"))["y"]
assert y == 5, "unexpected answer"
json.dump({"passed": True}, open(a.report, "w"))''')
    server = SERVER.replace("return x * x + 1", "return x * x + 1 if x != 2 else 99")
    traj = trajectory([orchestrator(1, "a"), {"key": "r001/a*/implementer", "files": {"server.py": server},
                                              "reply": {"summary": "x"}},
                       {"key": "r*/a*/judge", "reply": PASS}, {"key": "r*/a*/evaluator", "reply": EVAL}])
    runs = tmp_path / "runs"
    out = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "c", "--rounds", "1",
              "--sandbox", "none")
    assert out.returncode == 2, out.stdout + out.stderr
    said = " ".join(out.stderr.split())
    assert "accuracy.command" in said and "crashed" in said and "AssertionError: unexpected answer" in said
    assert "no retry was spent" in said
    assert rows(runs / "c", "SELECT status FROM run") == [("failed",)]
    # Not journaled: once the checker is fixed, resuming runs that gate again instead of replaying the crash.
    assert rows(runs / "c", "SELECT COUNT(*) FROM steps WHERE name = 'accuracy' AND round = 1") == [(0,)]
    assert rows(runs / "c", "SELECT COUNT(*) FROM agent_calls WHERE key LIKE 'r001/a2/%'") == [(0,)]


def test_the_implementer_sees_why_its_server_crashed(toy: Path, trajectory, tmp_path: Path) -> None:
    crashing = SERVER.replace("def f(x):\n", "def f(x):\n    import os, sys\n"
                              "    print('kaboom: the KV cache index ran past its end', file=sys.stderr, flush=True)\n"
                              "    os._exit(7)\n")
    traj = trajectory([orchestrator(1, "a"),
                       {"key": "r001/a1/implementer", "files": {"server.py": crashing}, "reply": {"summary": "x"}},
                       {"key": "r001/a2/implementer", "files": {"score.txt": "2\n"}, "reply": {"summary": "y"}},
                       {"key": "r*/a*/judge", "reply": PASS}, {"key": "r*/a*/evaluator", "reply": EVAL}])
    runs = tmp_path / "runs"
    cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "k", "--rounds", "1",
        "--sandbox", "none", check=True)
    prompt = (runs / "k" / "transcripts" / "r001-a2-implementer.jsonl").read_text()
    assert "kaboom: the KV cache index ran past its end" in prompt and "exited with code 7" in prompt
    (reason,) = rows(runs / "k", "SELECT reason FROM gates WHERE round = 1 AND attempt = 1")[0]
    assert "\n" not in reason and "exited with code 7" in reason


def _limited_server(toy: Path, tmp_path: Path, code: str, limits: CandidateLimits) -> str:
    """Start a server that never gets ready under ``limits``; return why it did not."""
    (toy / "seed" / "server.py").write_text(code)
    with CandidateGroup(limits) as applied:
        jail = CandidateJail(mode=SandboxMode.NONE, limits=applied)
        server = CandidateServer(load_target(toy), toy / "seed", tmp_path / "logs", "server", jail=jail)
        with pytest.raises(ServerNotReady) as e, server:
            pass
    return str(e.value)


def test_a_candidate_that_floods_its_log_is_stopped_at_log_mb_and_the_tail_is_read_from_the_end(
        toy: Path, tmp_path: Path) -> None:
    flood = "import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n"
    reason = _limited_server(toy, tmp_path, flood, CandidateLimits(file_bytes=2 << 20))
    assert "[limits].log_mb" in reason
    log = tmp_path / "logs" / "server.stderr"
    assert log.stat().st_size <= 2 << 20
    assert read_tail(log, 100) == "x" * 100


def test_a_candidate_past_its_memory_limit_fails_naming_the_limit(toy: Path, tmp_path: Path) -> None:
    hog = "blocks = []\nwhile True:\n    blocks.append(bytearray(32 << 20))\n"
    reason = _limited_server(toy, tmp_path, hog, CandidateLimits(memory_bytes=256 << 20))
    assert "[limits].memory_mb" in reason and "256 MiB" in reason


def test_a_candidate_past_its_process_limit_fails_naming_the_limit(toy: Path, tmp_path: Path) -> None:
    with CandidateGroup(CandidateLimits()) as probe:
        if os.geteuid() == 0 and not probe.cgroup:
            pytest.skip("as root without a control group, the kernel does not enforce a process limit")
    threads = ("import threading, time\nfor _ in range(200):\n"
               "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n")
    reason = _limited_server(toy, tmp_path, threads, CandidateLimits(processes=40))
    assert "[limits].processes" in reason


def test_validate_names_a_path_the_sandbox_will_hide(toy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "weights.bin"
    outside.write_text("w")
    toml = toy / "target.toml"
    toml.write_text(toml.read_text().replace('start = ["python", "server.py", "--port", "{port}"]',
                                             f'start = ["python", "server.py", "--port", "{{port}}", "--weights={outside}"]'))
    from vibeserve.sandbox import Sandbox

    problems = hidden_paths(load_target(toy), Sandbox("bwrap"))
    assert problems and problems[0][0] == "deliverable.start" and str(outside) in problems[0][1]
    assert "[artifacts]" in problems[0][1]
    assert hidden_paths(load_target(toy), Sandbox("none")) == []
    if subprocess.run(["which", "bwrap"], capture_output=True).returncode == 0:
        with pytest.raises(TargetError, match="hides it"):
            validate_target(toy, log=lambda s: None)


def test_a_long_step_says_it_is_still_running() -> None:
    said: list[str] = []
    with still_running("accuracy gate", said.append, every_s=0.05):
        time.sleep(0.3)
    assert said and all("accuracy gate: still running" in s for s in said)


def test_other_work_on_the_machine_is_measured_and_flagged() -> None:
    # A busy process this one did not start (double-forked: never ours to reap) spins for the whole window.
    burner = subprocess.Popen([sys.executable, "-c", "import os, time\nif os.fork() == 0:\n"
                               "    end = time.time() + 2\n    while time.time() < end: pass\n"])
    burner.wait()
    with LoadMeter() as meter:
        time.sleep(1.0)
    assert meter.other_cores is not None and meter.other_cores > 0.5, meter.report()
    assert "max_background_load" in meter.warning(0.25)
    assert meter.report()["cores"] == os.cpu_count()
