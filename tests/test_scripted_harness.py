"""The scripted harness: real git worktrees, real MCP servers over stdio, real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vibeserve.errors import HarnessError
from vibeserve.harness import Harness, make_harness
from vibeserve.harness.scripted import ScriptedHarness
from vibeserve.policies.board import IssueBoard
from vibeserve.policies.issue_tracker_mcp import server_spec
from vibeserve.store.db import RunStore
from vibeserve.types import AgentCall, ExitReason, McpServerSpec, Role


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repo with one commit, and a worktree of it at tmp_path/wt (where agents work)."""
    main = tmp_path / "repo"
    (main / "server").mkdir(parents=True)
    (main / "server" / "app.py").write_text("def handle(batch):\n    return [x for x in batch]\n")
    (main / "server" / "old.py").write_text("legacy = True\n")
    git(main, "init", "-q", "-b", "main")
    git(main, "add", "-A")
    git(main, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "seed")
    git(main, "worktree", "add", "-q", str(tmp_path / "wt"), "HEAD")
    return tmp_path / "wt"


@pytest.fixture
def store(tmp_path: Path, repo: Path) -> Iterator[RunStore]:
    s = RunStore.create(tmp_path / "run")
    s.init_run("run-1", "target", "issue-tracker", {}, {})
    s.update_run(baseline_commit=git(repo, "rev-parse", "HEAD").strip())
    yield s
    s.close()


def write_trajectory(root: Path, toml: str, patches: dict[str, str] | None = None) -> ScriptedHarness:
    root.mkdir(parents=True, exist_ok=True)
    (root / "trajectory.toml").write_text(textwrap.dedent(toml))
    for rel, text in (patches or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return ScriptedHarness(root)


def call(key: str, workdir: Path, tmp_path: Path, role: Role = Role.IMPLEMENTER, timeout_s: float = 60,
         mcp: list[McpServerSpec] | None = None) -> AgentCall:
    return AgentCall(key=key, role=role, prompt="p", workdir=workdir, reply_schema={}, timeout_s=timeout_s,
                     mcp_servers=mcp or [], transcript_path=tmp_path / "transcripts" / f"{key.replace('/', '-')}.jsonl")


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_orchestrator_creates_and_picks_an_issue_through_the_real_server(
    tmp_path: Path, repo: Path, store: RunStore
) -> None:
    h = write_trajectory(tmp_path / "traj", """
        version = 1
        description = "one orchestrator turn"
        [[call]]
        key = "r001/orchestrator"
        mcp = [ { tool = "create_issue", arguments = { title = "Batch requests", hypothesis = "fewer passes", acceptance_criteria = ["2x"], priority = 1 } },
                { tool = "pick_next", arguments = { issue_id = 42, start_commit = "best" } },
                { tool = "no_such_tool" },
                { tool = "pick_next", arguments = { issue_id = 1, start_commit = "best" } } ]
        reply = { summary = "picked issue 1" }
    """)
    h.check()
    c = call("r001/orchestrator", repo, tmp_path, Role.ORCHESTRATOR,
             mcp=[server_spec(store.dir, "r001/orchestrator", Role.ORCHESTRATOR)])
    res = h.run(c)

    assert res.exit_reason == ExitReason.OK, res.error
    assert res.reply == {"summary": "picked issue 1"}
    assert (res.tokens_in, res.tokens_out, res.cost_usd) == (0, 0, 0.0)
    board = IssueBoard(store)
    assert board.get_issue(1).title == "Batch requests"
    assert board.pick_for("r001/orchestrator") == (1, git(repo, "rev-parse", "HEAD").strip())

    ev = events(c.transcript_path)
    assert [e["type"] for e in ev] == ["start", "message"] + ["tool_call", "tool_result"] * 4 + ["reply"]
    results = [e for e in ev if e["type"] == "tool_result"]
    assert [r["is_error"] for r in results] == [False, True, True, False]
    assert "issue 42 does not exist" in results[1]["text"]
    assert "no MCP server offers tool 'no_such_tool'" in results[2]["text"]
    assert all(isinstance(e["t"], float) for e in ev)


def test_implementer_patch_files_delete_and_commands_apply_to_the_worktree(tmp_path: Path, repo: Path) -> None:
    (repo / "server" / "app.py").write_text("def handle(batch):\n    return list(batch)  # batched\n")
    patch = git(repo, "diff")
    git(repo, "checkout", "--", ".")
    h = write_trajectory(tmp_path / "traj", """
        version = 1
        [[call]]
        key = "r001/a1/implementer"
        patch = "patches/01-batch.patch"
        files = { "server/notes.txt" = "batching added" }
        delete = ["server/old.py"]
        commands = [["python", "-c", "open('ran.txt', 'w').write('yes')"]]
        reply = { summary = "added batching" }
    """, {"patches/01-batch.patch": patch})
    h.check()
    c = call("r001/a1/implementer", repo, tmp_path)
    res = h.run(c)

    assert res.exit_reason == ExitReason.OK, res.error
    assert res.reply == {"summary": "added batching"}
    assert "# batched" in (repo / "server" / "app.py").read_text()
    assert (repo / "server" / "notes.txt").read_text() == "batching added"
    assert not (repo / "server" / "old.py").exists()
    assert (repo / "ran.txt").read_text() == "yes"
    assert set(git(repo, "status", "--porcelain").splitlines()) == {
        " M server/app.py", " D server/old.py", "?? ran.txt", "?? server/notes.txt"}
    kinds = [e["type"] for e in events(c.transcript_path)]
    assert kinds == ["start", "message"] + ["tool_call", "tool_result"] * 3 + ["reply"]
    names = [e["name"] for e in events(c.transcript_path) if e["type"] == "tool_call"]
    assert names == ["apply_patch", "write_files", "shell"]


def test_a_patch_that_does_not_apply_is_an_error_with_gits_message(tmp_path: Path, repo: Path) -> None:
    bad = textwrap.dedent("""\
        --- a/server/app.py
        +++ b/server/app.py
        @@ -1,2 +1,2 @@
         def nothing_like_this():
        -    pass
        +    return 1
    """)
    h = write_trajectory(tmp_path / "traj", """
        version = 1
        [[call]]
        key = "r001/a1/implementer"
        patch = "bad.patch"
        files = { "never.txt" = "x" }
        reply = { summary = "x" }
    """, {"bad.patch": bad})
    res = h.run(call("r001/a1/implementer", repo, tmp_path))
    assert res.exit_reason == ExitReason.ERROR and res.reply is None
    assert "git apply" in res.error and "patch does not apply" in res.error
    assert not (repo / "never.txt").exists()  # the step stopped at the failed patch


def test_exact_keys_win_and_patterns_match_the_rest(tmp_path: Path, repo: Path) -> None:
    h = write_trajectory(tmp_path / "traj", """
        version = 1
        [[call]]
        key = "r*/a*/judge"
        reply = { verdict = "pass" }
        [[call]]
        key = "r001/a1/judge"
        reply = { verdict = "fail" }
        [[call]]
        key = "r*/a*/judge/t*"
        reply = { verdict = "retry" }
    """)
    h.check()
    reply = {k: h.run(call(k, repo, tmp_path, Role.JUDGE)).reply for k in
             ("r001/a1/judge", "r002/a3/judge", "r001/a1/judge/t2")}
    assert reply == {"r001/a1/judge": {"verdict": "fail"}, "r002/a3/judge": {"verdict": "pass"},
                     "r001/a1/judge/t2": {"verdict": "retry"}}


def test_an_unknown_key_is_an_error_naming_key_and_file(tmp_path: Path, repo: Path) -> None:
    h = write_trajectory(tmp_path / "traj", """
        version = 1
        [[call]]
        key = "r001/orchestrator"
        reply = { summary = "x" }
    """)
    c = call("r002/a1/evaluator", repo, tmp_path, Role.EVALUATOR)
    res = h.run(c)
    assert res.exit_reason == ExitReason.ERROR and res.reply is None
    assert "'r002/a1/evaluator'" in res.error and str(tmp_path / "traj" / "trajectory.toml") in res.error
    assert events(c.transcript_path)[-1]["type"] == "error"


@pytest.mark.parametrize(("toml", "files", "expected"), [
    ("version = 1\n[[call]\nkey = 'x'\n", {}, "not valid TOML"),
    ("version = 1\n[[call]]\nkey = 'a'\n[[call]]\nkey = 'b'\nsleep_s = 'long'\n", {}, r"\[\[call\]\] 1 \(key 'b'\): sleep_s"),
    ("version = 1\n[[call]]\nkey = 'a'\nbogus = 1\n", {}, r"\[\[call\]\] 0 \(key 'a'\): bogus"),
    ("version = 1\n[[call]]\nkey = 'a'\nfiles = { '../escape' = 'x' }\n", {}, r"\[\[call\]\] 0.*'\.\./escape'"),
    ("version = 2\n", {}, "version"),
    ("version = 1\n[[call]]\nkey = 'a'\n[[call]]\nkey = 'b'\npatch = 'p/missing.patch'\n", {},
     r"\[\[call\]\] 1 \(key 'b'\): patch file .*missing.patch does not exist"),
])
def test_check_rejects_bad_trajectories(tmp_path: Path, toml: str, files: dict[str, str], expected: str) -> None:
    h = write_trajectory(tmp_path / "traj", toml, files)
    with pytest.raises(HarnessError, match=expected) as err:
        h.check()
    assert "trajectory.toml" in str(err.value)


def test_check_rejects_a_missing_trajectory(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="cannot read"):
        ScriptedHarness(tmp_path / "nowhere").check()


def test_sleep_past_the_timeout_returns_timeout_at_the_timeout(tmp_path: Path, repo: Path) -> None:
    h = write_trajectory(tmp_path / "traj", """
        version = 1
        [[call]]
        key = "r001/a1/implementer"
        sleep_s = 30.0
        reply = { summary = "too late" }
    """)
    t0 = time.monotonic()
    res = h.run(call("r001/a1/implementer", repo, tmp_path, timeout_s=0.5))
    assert res.exit_reason == ExitReason.TIMEOUT and res.reply is None
    assert 0.5 <= res.wall_s < 3 and time.monotonic() - t0 < 3


def test_a_hung_command_is_killed_at_the_timeout(tmp_path: Path, repo: Path) -> None:
    h = write_trajectory(tmp_path / "traj", """
        version = 1
        [[call]]
        key = "r001/a1/implementer"
        commands = [["python", "-c", "import os, time; open('pid', 'w').write(str(os.getpid())); time.sleep(60)"]]
        reply = { summary = "x" }
    """)
    res = h.run(call("r001/a1/implementer", repo, tmp_path, timeout_s=1.5))
    assert res.exit_reason == ExitReason.TIMEOUT and res.reply is None
    assert res.wall_s < 1.5 + 3  # the timeout plus the SIGTERM grace, not the command's 60 s
    with pytest.raises(ProcessLookupError):
        os.kill(int((repo / "pid").read_text()), 0)


@pytest.mark.parametrize("command", [["/nonexistent/mcp-server"], ["false"]])
def test_an_mcp_server_that_does_not_start_is_an_error(tmp_path: Path, repo: Path, command: list[str]) -> None:
    h = write_trajectory(tmp_path / "traj", """
        version = 1
        [[call]]
        key = "r001/orchestrator"
        mcp = [ { tool = "list_issues" } ]
        reply = { summary = "x" }
    """)
    c = call("r001/orchestrator", repo, tmp_path, Role.ORCHESTRATOR, timeout_s=30,
             mcp=[McpServerSpec(name="broken", command=command)])
    res = h.run(c)
    assert res.exit_reason == ExitReason.ERROR and res.reply is None
    assert "MCP server 'broken'" in res.error and "did not start" in res.error
    assert res.wall_s < 20


def test_scripted_failures_and_the_registry(tmp_path: Path, repo: Path) -> None:
    h = make_harness("scripted", trajectory=write_trajectory(tmp_path / "traj", """
        version = 1
        [[call]]
        key = "r001/a1/judge"
        fail = "error"
        reply = { verdict = "pass" }
        [[call]]
        key = "r001/a2/judge"
        fail = "timeout"
    """).dir)
    assert isinstance(h, Harness) and h.name == "scripted"
    h.check()
    first = h.run(call("r001/a1/judge", repo, tmp_path, Role.JUDGE))
    second = h.run(call("r001/a2/judge", repo, tmp_path, Role.JUDGE))
    assert (first.exit_reason, first.reply) == (ExitReason.ERROR, None)
    assert (second.exit_reason, second.reply) == (ExitReason.TIMEOUT, None)
