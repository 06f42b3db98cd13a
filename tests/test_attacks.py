"""Attacks on what judges a candidate, each made by a candidate or an agent step of a real run.

Every attack here was once seen to work: an agent's ``vibeserve/__init__.py`` imported by framework
processes; a candidate rewriting the benchmark's report, the saved answers or the session's verdict,
stopping or killing its judges, tracing the checker, undoing the sandbox's mounts, keeping a cache in the
benchmark lock, writing the target or the reference cache under ``--sandbox none``, leaving a daemon; an
agent reading the home directory or other checkouts and reaching local services. Each test runs the
attack through ``vibeserve run`` exactly as a run does and checks both what the attacker saw and that the
run recorded only honest numbers.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import threading
import uuid
from pathlib import Path

import pytest

from conftest import cli
from test_loop import EVAL, PASS, orchestrator, rows
from test_sandbox import no_leftovers
from vibeserve.jail import unshare_works
from vibeserve.target.scaffold import SERVER

PROBE = Path(__file__).parent / "attacks" / "probe.py"
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
FAST = [{"key": "r*/a*/judge", "reply": PASS}, {"key": "r*/a*/evaluator", "reply": EVAL}]


def attacking_server(plan: dict) -> str:
    """The toy server, honest in its answers, that runs the probe while the benchmark waits for /stats."""
    hook = (
        "        if url.path == '/stats' and not getattr(Handler, 'probed', False):\n"
        "            Handler.probed = True\n"
        "            import json as _j, probe as _p\n"
        f"            print('PROBE ' + _j.dumps(_p.probe(_j.loads({json.dumps(plan)!r}))), flush=True)\n"
    )
    marker = "        if url.path == \"/stats\":\n"
    assert marker in SERVER
    return SERVER.replace(marker, hook + marker)


def probe_output(path: Path) -> dict:
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("PROBE ")]
    assert lines, f"the probe did not run: {path.read_text()[-2000:]}"
    return json.loads(lines[-1][len("PROBE "):])


def run_attack(toy: Path, trajectory, tmp_path: Path, sandbox: str, files: dict, rounds: int = 1,
               extra: list | None = None, commands: list | None = None) -> tuple[Path, str]:
    traj = trajectory([
        orchestrator(1, "Attack"),
        {"key": "r001/a1/implementer", "files": files, "commands": commands or [],
         "reply": {"summary": "faster, honestly"}},
        *(extra or []),
        *FAST,
    ])
    runs = tmp_path / "runs"
    out = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "a",
              "--rounds", str(rounds), "--sandbox", sandbox, "--no-report")
    assert out.returncode == 0, out.stdout + out.stderr
    return runs / "a", out.stdout


CPU_TOPOLOGY = "/sys/devices/system/cpu/online"
HOST_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"  # a write would fail on "forged" anyway


def forged_verdict(commit: str = "x") -> str:
    return json.dumps({"gate": "benchmark", "passed": True, "commit": commit, "metric": 1000.0,
                       "samples": [1000.0], "report": {}, "command": []})


@pytest.mark.parametrize("sandbox", [pytest.param("bwrap", marks=needs_bwrap), "none"])
def test_a_candidate_cannot_touch_its_judges_or_forge_its_numbers(toy: Path, trajectory, tmp_path: Path,
                                                                  sandbox: str) -> None:
    if sandbox == "none" and not unshare_works():
        pytest.skip("unshare cannot make a PID and mount namespace here")
    daemon = f"vibeserve-daemon-{uuid.uuid4().hex}"
    run_dir = tmp_path / "runs" / "a"
    logs = run_dir / "logs" / "r001" / "a1" / "benchmark"
    plan = {
        "read": [str(run_dir / "run.db"), CPU_TOPOLOGY] if sandbox == "bwrap" else [],
        "write": [str(run_dir / "run.db"), str(tmp_path / "runs" / ".benchmark.lock"),
                  str(toy / "checks" / "accuracy.py"), str(toy / "reference.py"),
                  *([HOST_SETTING] if sandbox == "bwrap" else [])],
        "forge": {str(logs / "session-verdict.json"): forged_verdict(), str(logs / "bench0.json"): '{"score": 1000}',
                  str(run_dir / "reference-cache" / "planted.json"): '{"y": 0}'},
        "unmount": [str(run_dir), str(toy)],
        "daemon": daemon,
    }
    files = {"server.py": attacking_server(plan), "probe.py": PROBE.read_text(), "score.txt": "2.0\n"}
    checker_before = (toy / "checks" / "accuracy.py").read_text()
    run_dir, _ = run_attack(toy, trajectory, tmp_path, sandbox, files)
    seen = probe_output(logs / "server.stdout")

    # It saw nobody but itself, had no capabilities, and no signal, trace or mount went through. (Its writes
    # may "succeed" into its private /tmp, where these test paths lie: what counts is the real files below.)
    assert seen["visible_processes"] == [], seen["visible_processes"]
    assert seen["cap_eff"] == "0000000000000000"
    assert seen["signal others"] == "nobody to signal" and seen["ptrace others"] == "nobody to trace"
    mounts = {k: v for k, v in seen.items() if k.split(" ")[0] in ("umount", "remount")}
    assert mounts and all(v != "ok" for v in mounts.values()), mounts
    for k in ("mount tmpfs", "raw socket", "new user namespace"):
        assert seen[k] != "ok", (k, seen[k])
    if sandbox == "bwrap":
        assert seen[f"read {run_dir / 'run.db'}"] != "ok"  # the store (and the run's secret seed) is not there
        # /sys is there to read (engines size themselves by the CPU topology), not to change the host by
        assert seen[f"read {CPU_TOPOLOGY}"] == "ok"
        assert seen[f"write {HOST_SETTING}"] == "Read-only file system"

    # The run recorded the number the candidate honestly reports, and nothing it forged or wrote.
    assert rows(run_dir, "SELECT round, status, metric FROM rounds") == [(0, "kept", 1.0), (1, "kept", 2.0)]
    assert (toy / "checks" / "accuracy.py").read_text() == checker_before
    assert "forged" not in (toy / "reference.py").read_text()
    assert not (run_dir / "reference-cache" / "planted.json").exists()
    assert json.loads((logs / "bench0.json").read_text())["score"] == 2.0
    assert not (run_dir / "run.db").read_bytes().endswith(b"forged")
    assert b"forged" not in (tmp_path / "runs" / ".benchmark.lock").read_bytes()
    assert no_leftovers(daemon) == []


@needs_bwrap
def test_a_candidate_that_kills_everything_it_sees_only_fails_itself(toy: Path, trajectory, tmp_path: Path) -> None:
    # kill(-1) from inside: every process the candidate can signal. Its judges must be out of reach.
    killer = SERVER.replace("        if url.path == \"/stats\":\n",
                            "        if url.path == \"/stats\":\n            import os, signal\n"
                            "            os.kill(-1, signal.SIGKILL)\n")
    honest = {"key": "r001/a2/implementer", "files": {"server.py": SERVER, "score.txt": "2.0\n"},
              "reply": {"summary": "the honest version"}}
    run_dir, _ = run_attack(toy, trajectory, tmp_path, "bwrap", {"server.py": killer, "score.txt": "9.0\n"},
                            extra=[honest])
    gates = rows(run_dir, "SELECT attempt, gate, passed, metric FROM gates WHERE round = 1 ORDER BY id")
    assert gates == [(1, "accuracy", 1, None), (1, "benchmark", 0, None), (2, "accuracy", 1, None),
                     (2, "benchmark", 1, 2.0)]
    (reason,) = rows(run_dir, "SELECT reason FROM gates WHERE round = 1 AND attempt = 1 AND gate = 'benchmark'")[0]
    assert "deliverable exited" in reason or "benchmark run" in reason
    # The judges it tried to kill went on and judged it; the run went on to an honest candidate.
    assert rows(run_dir, "SELECT round, status, metric FROM rounds") == [(0, "kept", 1.0), (1, "kept", 2.0)]


def _listen_tcp() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    return s, s.getsockname()[1]


def _accept_forever(s: socket.socket) -> None:
    while True:
        try:
            conn, _ = s.accept()
        except OSError:
            return
        conn.close()


@needs_bwrap
def test_an_agent_sees_only_its_worktree_the_target_and_the_toolchain(toy: Path, trajectory, tmp_path: Path) -> None:
    other = tmp_path / "other-checkout"
    other.mkdir()
    (other / "secret.txt").write_text("another project's secret")
    home_secret = Path.home() / f".vibeserve-test-secret-{uuid.uuid4().hex}"
    home_secret.write_text("the user's credentials")
    service, port = _listen_tcp()
    abstract = f"vibeserve-test-{uuid.uuid4().hex}"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0" + abstract)
    unix.listen(4)
    for s in (service, unix):
        threading.Thread(target=_accept_forever, args=(s,), daemon=True).start()
    marker = tmp_path / "imported-the-agents-package"
    plan = {"read": [str(other / "secret.txt"), str(home_secret), str(toy / "checks" / "accuracy.py")],
            "write": [str(toy / "checks" / "accuracy.py")], "unmount": ["/tmp"], "tcp": port,
            "abstract": abstract}
    shadow = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('framework code ran the agent\\'s package')\n"
    skill = ".agents/skills/continuous-batching/SKILL.md"
    try:
        run_dir, _ = run_attack(toy, trajectory, tmp_path, "bwrap", {
            "vibeserve/__init__.py": shadow, "probe.py": PROBE.read_text(), "score.txt": "2.0\n"},
            commands=[[sys.executable, "probe.py", json.dumps({"write": [skill]})]],
            extra=[{"key": "r001/a1/judge", "mcp": [{"tool": "list_issues", "arguments": {}}],
                    "commands": [[sys.executable, "probe.py", json.dumps(plan)]], "reply": PASS}])
    finally:
        home_secret.unlink()
        service.close()
        unix.close()
    seen = probe_output(run_dir / "transcripts" / "r001-a1-judge.logs" / "command-0.stdout")
    assert seen[f"read {other / 'secret.txt'}"] != "ok" and seen[f"read {home_secret}"] != "ok"
    assert seen[f"read {toy / 'checks' / 'accuracy.py'}"] == "ok"  # the target is readable ...
    assert seen[f"write {toy / 'checks' / 'accuracy.py'}"] != "ok"  # ... and read-only
    assert seen["tcp outside"] != "ok" and seen["abstract socket outside"] != "ok"
    assert seen["cap_eff"] == "0000000000000000" and seen["raw socket"] != "ok" and seen["mount tmpfs"] != "ok"
    assert seen["umount /tmp"] != "ok" and seen["new user namespace"] != "ok"
    # The MCP server (started for the judge's call) and the gate sessions never imported the agent's package.
    assert not marker.exists()
    assert rows(run_dir, "SELECT round, status FROM rounds") == [(0, "kept"), (1, "kept")]
    # The skills installed for the implementer are there to read, not to change.
    implementer_seen = probe_output(run_dir / "transcripts" / "r001-a1-implementer.logs" / "command-0.stdout")
    assert implementer_seen[f"write {skill}"] == "Read-only file system"
