"""The sandbox, with the real bubblewrap: what agents and candidates can write, see and leave behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import anyio
import pytest

from conftest import cli
from test_loop import EVAL, PASS, implementer, orchestrator
from vibeserve.loop.config import RunConfig, create_run
from vibeserve.policies.board import IssueBoard
from vibeserve.process import clean_env, run, spawn
from vibeserve.sandbox import Sandbox
from vibeserve.target.scaffold import SERVER
from vibeserve.testing.toy_target import write_trajectory
from vibeserve.workspace import Workspace

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None,
    reason="bubblewrap (bwrap) is not installed: `apt-get install -y bubblewrap` (scripts/setup.sh does)")

# For each path given (JSON list): whether it is visible, then the outcome of opening it for appending.
WRITE_PROBE = """
import json, os, sys
out = {}
for p in json.loads(sys.argv[1]):
    seen = os.path.exists(p)
    try:
        open(p, "a").close()
        out[p] = [seen, "ok"]
    except OSError as e:
        out[p] = [seen, e.strerror]
print(json.dumps(out))
"""

# What a gate sees: its network interfaces, a credential, loopback between two processes, writable paths.
GATE_PROBE = """
import json, os, socket, subprocess, sys
ifaces = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
child = subprocess.Popen([sys.executable, "-c", "import socket, sys; s = socket.create_connection(('127.0.0.1', "
                          "int(sys.argv[1]))); s.sendall(b'over loopback'); s.close()", str(srv.getsockname()[1])])
conn, _ = srv.accept(); got = conn.recv(100).decode(); child.wait()
store_visible = os.path.exists(sys.argv[-1])
writes = {}
for p in sys.argv[1:]:
    try:
        open(p, "a").close(); writes[p] = "ok"
    except OSError as e:
        writes[p] = e.strerror
print(json.dumps({"ifaces": ifaces, "key": os.environ.get("OPENAI_API_KEY"), "loopback": got, "writes": writes,
                  "store_visible": store_visible}))
"""


def leftovers(marker: str) -> list[str]:
    """Processes whose command line or working directory mentions ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if marker in cmdline or marker in cwd:
            found.append(f"{entry.name}: {cmdline[:200]} (cwd {cwd})")
    return found


def no_leftovers(marker: str, within_s: float = 10.0) -> list[str]:
    deadline = time.monotonic() + within_s
    while (found := leftovers(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


@pytest.fixture
def layout(toy: Path, tmp_path: Path) -> dict[str, Path]:
    """A real run of the toy target: store, repo with the seed, and round 1's worktree."""
    traj = write_trajectory(tmp_path / "traj", [])
    run_dir = create_run(tmp_path / "runs", RunConfig(run_id="r", target=str(toy), sandbox="none",
                                                      harness_options={"trajectory": str(traj)}))
    ws = Workspace(run_dir)
    workdir = ws.worktree("r001", ws.init(toy / "seed"))
    return {"target": toy, "run": run_dir, "workdir": workdir, "repo": ws.repo}


@needs_bwrap
def test_an_agent_writes_its_worktree_and_nothing_of_the_target_git_or_store(layout: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    target, run_dir, workdir, repo = layout["target"], layout["run"], layout["workdir"], layout["repo"]
    home = tmp_path / "call-home"
    read_only = [target / "new.txt", target / "checks" / "accuracy.py", workdir / ".git", repo / ".git" / "config",
                 repo / ".git" / "worktrees" / "r001" / "HEAD", repo / "server.py"]
    # The rest of the run directory (the store, logs, transcripts) is not there at all.
    hidden = [run_dir / "run.db", run_dir / "transcripts" / "other-call.jsonl"]
    writable = [workdir / "server.py", workdir / "new_file.py", home / "config.json"]
    hidden[1].write_text('{"type": "start"}\n')
    before = {p: p.read_bytes() for p in hidden}
    host_tmp = Path("/tmp") / f"vibeserve-host-{uuid.uuid4().hex}"
    host_tmp.write_text("the host's /tmp")
    inside_tmp = Path("/tmp") / f"vibeserve-inside-{uuid.uuid4().hex}"
    check_tmp = (f"import os; open({str(inside_tmp)!r}, 'w').write('x'); "
                 f"print(os.path.exists({str(host_tmp)!r}))")
    sandbox = Sandbox.for_run("bwrap", run_dir, target)
    paths = json.dumps([str(p) for p in read_only + hidden + writable])
    probe = run(sandbox.agent_argv([sys.executable, "-c", WRITE_PROBE, paths], workdir, [home]), workdir,
                tmp_path / "logs", "probe", 60, env=clean_env())
    tmp = run(sandbox.agent_argv([sys.executable, "-c", check_tmp], workdir), workdir, tmp_path / "logs", "tmp", 60,
              env=clean_env())
    git = run(sandbox.agent_argv(["git", "log", "--oneline"], workdir), workdir, tmp_path / "logs", "git", 60,
              env=clean_env())
    host_tmp.unlink()
    assert probe.returncode == 0, probe.tail()
    result = json.loads(probe.stdout_path.read_text())
    assert {p: result[str(p)][1] for p in read_only} == {p: "Read-only file system" for p in read_only}
    assert {p: result[str(p)][0] for p in hidden} == {p: False for p in hidden}  # not visible
    assert {p: p.read_bytes() for p in hidden} == before  # and not changed (a write lands in an empty tmpfs)
    assert {p: result[str(p)][1] for p in writable} == {p: "ok" for p in writable}
    assert (workdir / "new_file.py").exists() and not (target / "new.txt").exists()
    # git can read the worktree's history (the run repo is in view, read-only)
    assert git.returncode == 0 and "seed deliverable" in git.stdout_path.read_text(), git.tail()
    # /tmp is private: the host's files are not there, and what the agent writes there goes nowhere
    assert tmp.returncode == 0 and tmp.stdout_path.read_text().strip() == "False", tmp.tail()
    assert not inside_tmp.exists()


@needs_bwrap
def test_a_gate_has_only_loopback_no_credentials_and_writes_only_its_logs(
        layout: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    workdir, logs = layout["workdir"], layout["run"] / "logs" / "gate"
    sandbox = Sandbox.for_run("bwrap", layout["run"], layout["target"])
    paths = [logs / "report.json", workdir / "server.py", layout["target"] / "checks" / "bench.py",
             layout["run"] / "run.db"]
    done = run(sandbox.judge_argv([sys.executable, "-c", GATE_PROBE, *map(str, paths)], logs, [logs], [workdir]),
               workdir, tmp_path / "logs", "gate", 60, env=clean_env())
    assert done.returncode == 0, done.tail()
    seen = json.loads(done.stdout_path.read_text())
    assert seen["ifaces"] == ["lo"]
    assert seen["key"] is None
    assert seen["loopback"] == "over loopback"
    assert seen["writes"] == {str(paths[0]): "ok", str(paths[1]): "Read-only file system",
                              str(paths[2]): "Read-only file system", str(paths[3]): "ok"}
    assert seen["store_visible"] is False  # the run store (and the run's seed in it) is hidden from candidates


@needs_bwrap
def test_stopping_a_gate_session_leaves_no_process_even_one_that_left_the_group(layout: dict[str, Path],
                                                                              tmp_path: Path) -> None:
    marker = f"vibeserve-leftover-{uuid.uuid4().hex}"
    # A server on loopback, and a grandchild in its own session that ignores SIGTERM.
    code = (f"# {marker}\nimport os, signal, socket, subprocess, sys, time\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
            f"subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, "
            f"signal.SIG_IGN); time.sleep(600)  # {marker}'], start_new_session=True)\n"
            "print('ready', flush=True); time.sleep(600)\n")
    sandbox = Sandbox.for_run("bwrap", layout["run"], layout["target"])
    proc = spawn(sandbox.judge_argv([sys.executable, "-c", code], layout["workdir"], [], [layout["workdir"]]),
                 layout["workdir"], tmp_path / "logs", "session", env=clean_env())
    deadline = time.monotonic() + 30
    while "ready" not in proc.stdout_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(leftovers(marker)) >= 3  # bwrap, the session and the grandchild are running
    done = proc.wait(timeout_s=0.1)  # the timeout path: the group is killed
    assert done.timed_out
    assert no_leftovers(marker) == []


@needs_bwrap
def test_a_gate_session_that_dies_is_a_failed_verdict_naming_its_log(layout: dict[str, Path], tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from vibeserve.gates.session import GateJob, run_sandboxed

    sandbox = Sandbox.for_run("bwrap", layout["run"], layout["target"])
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the session's interpreter: exits 1 at once
    job = GateJob(gate="accuracy", target_root=layout["target"], workdir=layout["workdir"],
                  log_dir=tmp_path / "gate", commit="abc")
    groups: list[tuple[str, int]] = []
    verdict = run_sandboxed(job, sandbox, on_start=lambda g: groups.append(("start", g)),
                            on_stop=lambda g: groups.append(("stop", g)))
    assert not verdict.passed and verdict.commit == "abc"
    assert "ended with exit code 1 and wrote no verdict" in verdict.reason
    assert str(tmp_path / "gate" / "session.stderr") in verdict.reason and "\n" not in verdict.reason
    assert [what for what, _ in groups] == ["start", "stop"] and groups[0][1] == groups[1][1]


@needs_bwrap
def test_the_issue_tracker_mcp_server_is_reached_from_inside_the_sandbox_through_the_relay(
        layout: dict[str, Path], tmp_path: Path) -> None:
    from vibeserve.harness.mcp_client import McpSession
    from vibeserve.mcp_relay import McpRelay
    from vibeserve.policies.issue_tracker_mcp import server_spec
    from vibeserve.store import RunStore

    run_dir, workdir = layout["run"], layout["workdir"]
    sandbox = Sandbox.for_run("bwrap", run_dir, layout["target"])
    spec = server_spec(run_dir, "r001/orchestrator", "orchestrator")

    relays: list[Path] = []

    async def session() -> tuple[list[str], str, bool]:
        with McpRelay([spec], workdir, tmp_path / "logs") as relay:
            relays.extend(relay.binds)
            inner = relay.servers[0]
            # The client starts the relay's connect end inside the sandbox, as an agent CLI would.
            boxed = inner.model_copy(update={"command": sandbox.agent_argv(inner.command, workdir, relay.binds)})
            async with McpSession([boxed], workdir, tmp_path / "logs") as mcp:
                made = await mcp.call("create_issue", {"title": "From the sandbox", "hypothesis": "h",
                                                       "acceptance_criteria": ["c"], "priority": 1})
                listed = await mcp.call("list_issues", {})
                return [t.name for t in mcp.tools], listed.text, made.is_error

    tools, listed, error = anyio.run(session)
    assert "create_issue" in tools and "pick_next" in tools
    assert not error and "From the sandbox" in listed
    store = RunStore.open(run_dir)
    try:
        assert [i.title for i in IssueBoard(store).list_issues()] == ["From the sandbox"]
    finally:
        store.close()
    assert no_leftovers(f"--run-dir {run_dir}") == []  # the real server ended with its connection
    assert len(relays) == 1 and not relays[0].exists()


def test_a_run_whose_sandbox_cannot_start_stops_before_the_run_exists(toy: Path, trajectory, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIBESERVE_BWRAP", str(tmp_path / "no-bwrap"))
    traj = trajectory([])
    runs = tmp_path / "runs"
    out = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "x", "--rounds", "0")
    assert out.returncode == 2, out.stdout + out.stderr
    said = " ".join(out.stderr.split())
    assert "bubblewrap (bwrap) is not installed" in said and "apt-get install -y bubblewrap" in said
    assert "--sandbox none" in said and "Traceback" not in out.stderr
    assert not (runs / "x").exists()

    # Turned off on the command line, the run goes on, and resume keeps the run's choice ...
    cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "x", "--rounds", "0",
        "--sandbox", "none", check=True)
    config = json.loads(sqlite3.connect(runs / "x" / "run.db").execute("SELECT config FROM run").fetchone()[0])
    assert config["sandbox"] == "none"
    assert cli("resume", "x", "--runs-dir", str(runs), "--no-report").returncode == 0
    # ... unless asked for bwrap again, which fails closed too.
    out = cli("resume", "x", "--runs-dir", str(runs), "--no-report", "--sandbox", "bwrap")
    assert out.returncode == 2 and "--sandbox none" in " ".join(out.stderr.split())


@needs_bwrap
def test_a_sandboxed_run_of_the_toy_target_passes_its_gates_in_a_box(toy: Path, trajectory, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    # The candidate reports what it sees on its stdout, which the gate keeps in its log.
    spy = ("import os as _os\n"
           "print('IFACES', sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]))\n"
           "print('KEY', _os.environ.get('OPENAI_API_KEY'), flush=True)\n")
    traj = trajectory([
        orchestrator(1, "Raise the score"),
        implementer("r001/a1/implementer", {"server.py": spy + SERVER, "score.txt": "2.0\n"}),
        {"key": "r*/a*/judge", "reply": PASS},
        {"key": "r*/a*/evaluator", "reply": EVAL},
    ])
    runs = tmp_path / "runs"
    cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "box", "--rounds", "1",
        "--sandbox", "bwrap", "--no-report", check=True)
    db = sqlite3.connect(runs / "box" / "run.db")
    assert db.execute("SELECT round, status, metric FROM rounds ORDER BY round").fetchall() == [
        (0, "kept", 1.0), (1, "kept", 2.0)]
    assert db.execute("SELECT round, gate, passed FROM gates ORDER BY id").fetchall() == [
        (0, "accuracy", 1), (0, "benchmark", 1), (1, "accuracy", 1), (1, "benchmark", 1)]
    assert db.execute("SELECT COUNT(*) FROM processes").fetchone() == (0,)
    assert json.loads(db.execute("SELECT config FROM run").fetchone()[0])["sandbox"] == "bwrap"
    gate_logs = runs / "box" / "logs" / "r001" / "a1" / "accuracy"
    assert (gate_logs / "session-verdict.json").is_file()  # the session ran as a sandboxed child
    seen = (gate_logs / "server.stdout").read_text()
    assert "IFACES ['lo']" in seen and "KEY None" in seen
    assert no_leftovers(str(tmp_path)) == []


@needs_bwrap
def test_killing_the_run_mid_gate_leaves_no_process_and_resume_finishes(toy: Path, trajectory,
                                                                         tmp_path: Path) -> None:
    # The checker waits while the run directory holds a file named "slow" (it can read the run, not write it).
    checker = toy / "checks" / "accuracy.py"
    checker.write_text("import pathlib as _p, sys as _s, time as _t\n"
                       "_run = _p.Path(_s.argv[_s.argv.index('--report') + 1]).parents[4]\n"
                       "while (_run / 'slow').exists(): _t.sleep(0.1)\n" + checker.read_text())
    runs = tmp_path / "runs"
    (runs / "k").mkdir(parents=True)
    (runs / "k" / "slow").touch()
    args = [sys.executable, "-m", "vibeserve", "run", str(toy), "--trajectory", str(trajectory([])),
            "--runs-dir", str(runs), "--run-id", "k", "--rounds", "0", "--no-report"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    started = runs / "k" / "logs" / "r000" / "a1" / "accuracy" / "accuracy.stdout"
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert started.exists(), "the accuracy checker never started"
    assert leftovers(str(runs / "k"))  # the gate session is running
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert no_leftovers(str(tmp_path)) == []  # bwrap died with its parent, and all inside with it

    (runs / "k" / "slow").unlink()
    cli("resume", "k", "--runs-dir", str(runs), "--no-report", check=True)
    db = sqlite3.connect(runs / "k" / "run.db")
    assert db.execute("SELECT status, baseline_metric FROM run").fetchone() == ("finished", 1.0)
    assert db.execute("SELECT COUNT(*) FROM processes").fetchone() == (0,)


@needs_bwrap
def test_the_builtin_agent_edits_only_its_worktree_and_its_shell_runs_in_the_sandbox(
        layout: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vibeserve.harness import make_harness
    from vibeserve.roles import reply_schema
    from vibeserve.testing.fake_llm import FakeLLM, Script, ToolCall, Turn
    from vibeserve.types import AgentCall, ExitReason, Role

    target, workdir = layout["target"], layout["workdir"]
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")
    dotgit = (workdir / ".git").read_text()
    tools = [
        ToolCall(name="write_file", arguments={"path": "../outside.txt", "content": "x"}),
        ToolCall(name="write_file", arguments={"path": ".git", "content": "gitdir: /elsewhere\n"}),
        ToolCall(name="edit_file", arguments={"path": str(target / "checks" / "accuracy.py"),
                                              "old_string": "import", "new_string": "# import"}),
        ToolCall(name="shell", arguments={"command": f"touch {target}/x || echo refused; echo ok > inside.txt"}),
    ]
    script = Script(reply_tool="submit", turns=[Turn(tool_calls=tools), Turn(reply={"summary": "s", "notes": ""})])
    with FakeLLM(script) as llm:
        harness = make_harness("openai", Sandbox.for_run("bwrap", layout["run"], target),
                               base_url=llm.openai_base_url)
        call = AgentCall(key="r001/a1/implementer", role=Role.IMPLEMENTER, prompt="implement", workdir=workdir,
                         reply_schema=reply_schema(Role.IMPLEMENTER), transcript_path=tmp_path / "t.jsonl")
        result = harness.run(call)
    assert result.exit_reason == ExitReason.OK, result.error
    events = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    outputs = [(e["name"], e["is_error"], e["output"]) for e in events if e["type"] == "tool_result"]
    assert [(name, is_error) for name, is_error, _ in outputs] == [
        ("write_file", True), ("write_file", True), ("edit_file", True), ("shell", False)]
    assert "outside the working directory" in outputs[0][2] and "git's own data" in outputs[1][2]
    assert "outside the working directory" in outputs[2][2]
    assert "Read-only file system" in outputs[3][2] and "refused" in outputs[3][2]
    assert (workdir / "inside.txt").read_text() == "ok\n"
    assert not (tmp_path / "runs" / "outside.txt").exists() and not (target / "x").exists()
    assert (workdir / ".git").read_text() == dotgit
    assert (target / "checks" / "accuracy.py").read_text().startswith("import")


# A stand-in for the Claude Code CLI: uses the MCP server it is given, tries to write the paths in its
# prompt (a JSON list), and replies with what happened, as stream-json.
FAKE_CLAUDE = """#!{python}
import json, sys
import anyio
from mcp import Client, StdioServerParameters, stdio_client

async def main():
    argv = sys.argv
    server = next(iter(json.loads(argv[argv.index("--mcp-config") + 1])["mcpServers"].values()))
    params = StdioServerParameters(command=server["command"], args=server["args"], env=server["env"] or None)
    async with Client(stdio_client(params)) as client:
        made = await client.call_tool("create_issue", {{"title": "Filed by the agent", "hypothesis": "h",
                                                       "acceptance_criteria": ["c"], "priority": 2}})
    out = {{"mcp_error": bool(made.is_error)}}
    for p in json.loads(argv[argv.index("-p") + 1]):
        try:
            open(p, "a").close(); out[p] = "ok"
        except OSError as e:
            out[p] = e.strerror
    print(json.dumps({{"type": "result", "is_error": False, "structured_output": {{"summary": json.dumps(out)}},
                      "usage": {{"input_tokens": 1, "output_tokens": 1}}}}))

anyio.run(main)
"""


@needs_bwrap
def test_a_cli_agent_runs_boxed_and_reaches_its_mcp_server_through_the_relay(layout: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    from vibeserve.harness import make_harness
    from vibeserve.policies.issue_tracker import IssueTrackerPolicy
    from vibeserve.roles import reply_schema
    from vibeserve.store import RunStore
    from vibeserve.types import AgentCall, ExitReason, Role

    run_dir, workdir, target = layout["run"], layout["workdir"], layout["target"]
    binary = tmp_path / "bin" / "claude"
    binary.parent.mkdir()
    binary.write_text(FAKE_CLAUDE.format(python=sys.executable))
    binary.chmod(0o755)
    paths = [str(workdir / "edited.py"), str(run_dir / "run.db"), str(target / "checks" / "bench.py")]
    store = RunStore.open(run_dir)
    try:
        servers = IssueTrackerPolicy(store).mcp_servers("r001/a1/implementer", Role.IMPLEMENTER)
        harness = make_harness("claude", Sandbox.for_run("bwrap", run_dir, target), binary=str(binary))
        harness.check()
        result = harness.run(AgentCall(
            key="r001/a1/implementer", role=Role.IMPLEMENTER, prompt=json.dumps(paths), workdir=workdir,
            reply_schema=reply_schema(Role.IMPLEMENTER), mcp_servers=servers,
            transcript_path=store.transcripts / "r001-a1-implementer.jsonl", timeout_s=120))
        titles = [i.title for i in IssueBoard(store).list_issues()]
    finally:
        store.close()
    assert result.exit_reason == ExitReason.OK, result.error
    seen = json.loads(result.reply["summary"])
    # run.db is not in the agent's view: the "write" lands in the empty tmpfs that hides the run directory
    assert seen == {"mcp_error": False, paths[0]: "ok", paths[1]: "ok", paths[2]: "Read-only file system"}
    assert titles == ["Filed by the agent"]  # the store was written, by the server outside the box
    assert no_leftovers(f"--run-dir {run_dir}") == []
