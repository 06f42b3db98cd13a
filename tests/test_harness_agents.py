"""The real Codex and Claude Code CLIs and the built-in OpenAI agent, each through one full round of the
toy target (its gates take seconds: what is tested here is the agent's side), against the local fake model
server (no keys, no network), under the default sandbox. Plus the failure modes: a model that never
answers, a reply that keeps failing its schema, a CLI binary that is missing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO
from vibeserve.harness import make_harness
from vibeserve.roles import reply_schema
from vibeserve.testing.fake_llm import FakeLLM, Script, ToolCall, Turn
from vibeserve.testing.toy_target import make_toy_target
from vibeserve.types import AgentCall, ExitReason, Role

# A real change to the toy server (its declared score, and a comment in its code), as a patch; it travels
# inside the command (a here-document): the agent's sandbox shows neither this checkout nor the host's /tmp.
PATCH = """--- a/score.txt
+++ b/score.txt
@@ -1 +1 @@
-1.0
+2.0
--- a/server.py
+++ b/server.py
@@ -1,3 +1,4 @@
+# answers computed once per request, by the agent's own tool
 import argparse
 import json
 import pathlib
"""
APPLY = f"git apply <<'VIBESERVE_PATCH'\n{PATCH}VIBESERVE_PATCH\n"
PASS = {"verdict": "pass", "reasons": "serving path only", "reward_hacking": False, "criteria_met": True}
EVAL = {"analysis": "one forward per token at batch 1", "hints": ["batch decode steps"]}
NEEDS_NPM = pytest.mark.skipif(
    not (REPO / ".cache/npm/node_modules/.bin/codex").exists(), reason="agent CLIs not installed: bash scripts/setup.sh"
)


def round_script(shell: ToolCall, mcp: str, reply_tool: str | None = None) -> Script:
    """One round: the orchestrator files and picks an issue over MCP, the implementer patches the server
    through its own shell tool, the judge and evaluator reply in schema."""
    issue = {"title": "One torch thread", "hypothesis": "threads fight the client for 2 cores",
             "acceptance_criteria": ["identical outputs"], "priority": 1}
    return Script(reply_tool=reply_tool, turns=[
        Turn(match="You are the Orchestrator", tool_calls=[ToolCall(name=f"{mcp}create_issue", arguments=issue)]),
        Turn(match="You are the Orchestrator",
             tool_calls=[ToolCall(name=f"{mcp}pick_next", arguments={"issue_id": 1, "start_commit": "best"})]),
        Turn(match="You are the Orchestrator", reply={"summary": "threads first"}, text="done"),
        Turn(match="You are the Implementer", tool_calls=[shell], usage={"input_tokens": 900, "output_tokens": 40}),
        Turn(match="You are the Implementer", reply={"summary": "one torch thread", "notes": ""}),
        Turn(match="You are the Accuracy Judge", reply=PASS),
        Turn(match="You are the Performance Evaluator", reply=EVAL),
    ])


def run_round(tmp_path: Path, harness: str, model: str, options: dict[str, str], env: dict[str, str]):
    toy = make_toy_target(tmp_path / "toy")
    args = [sys.executable, "-m", "vibeserve", "run", str(toy), "--harness", harness, "--model", model,
            "--rounds", "1", "--runs-dir", str(tmp_path / "runs"), "--run-id", harness, "--no-report"]
    for k, v in options.items():
        args += ["-O", f"{k}={v}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sqlite3.connect(tmp_path / "runs" / harness / "run.db")


def check_round(db: sqlite3.Connection, run_dir: Path, harness: str) -> None:
    status, candidate = db.execute("SELECT status, candidate FROM rounds WHERE round = 1").fetchone()
    assert status in ("kept", "accepted"), db.execute("SELECT result FROM rounds WHERE round = 1").fetchone()
    diff = subprocess.run(["git", "show", candidate], cwd=run_dir / "repo", capture_output=True, text=True).stdout
    assert "+# answers computed once per request" in diff and "+2.0" in diff  # the agent's own tool changed it
    assert db.execute("SELECT title, status FROM issues").fetchall() == [("One torch thread", "done")]
    calls = db.execute("SELECT key, harness, exit_reason FROM agent_calls ORDER BY key").fetchall()
    assert [(k, h) for k, h, _ in calls] == [
        ("r001/a1/evaluator", harness), ("r001/a1/implementer", harness), ("r001/a1/judge", harness),
        ("r001/orchestrator", harness)]
    assert all(r == "ok" for *_, r in calls)
    transcript = (run_dir / "transcripts" / "r001-a1-implementer.jsonl").read_text()
    assert '"type": "tool_call"' in transcript and '"type": "reply"' in transcript


@pytest.mark.cli_agents
@pytest.mark.slow
@NEEDS_NPM
def test_codex_runs_a_full_round(tmp_path: Path) -> None:
    shell = ToolCall(name="exec_command", arguments={"cmd": APPLY})
    with FakeLLM(round_script(shell, "mcp__issues__")) as llm:
        db = run_round(tmp_path, "codex", "fake-model", {"base_url": llm.openai_base_url, "env_key": "FAKE_KEY"},
                       {"FAKE_KEY": "dummy"})
        assert all(r.path == "/v1/responses" for r in llm.model_requests)
    check_round(db, tmp_path / "runs" / "codex", "codex")


@pytest.mark.cli_agents
@pytest.mark.slow
@NEEDS_NPM
def test_claude_code_runs_a_full_round(tmp_path: Path) -> None:
    shell = ToolCall(name="Bash", arguments={"command": APPLY})
    with FakeLLM(round_script(shell, "mcp__issues__")) as llm:
        db = run_round(tmp_path, "claude", "fake-claude", {"base_url": llm.anthropic_base_url, "max_retries": "0"},
                       {"ANTHROPIC_API_KEY": "dummy"})
        assert all(r.path == "/v1/messages" for r in llm.model_requests)
    check_round(db, tmp_path / "runs" / "claude", "claude")


@pytest.mark.slow
def test_builtin_openai_agent_runs_a_full_round(tmp_path: Path) -> None:
    shell = ToolCall(name="shell", arguments={"command": APPLY})
    with FakeLLM(round_script(shell, "mcp__issues__", reply_tool="submit")) as llm:
        db = run_round(tmp_path, "openai", "fake-model", {"base_url": llm.openai_base_url},
                       {"OPENAI_API_KEY": "dummy"})
    check_round(db, tmp_path / "runs" / "openai", "openai")
    tokens = db.execute("SELECT tokens_in, tokens_out FROM agent_calls WHERE key = 'r001/a1/implementer'").fetchone()
    assert tokens == (900, 40)


def agent_call(tmp_path: Path, role: Role = Role.JUDGE, timeout_s: float = 60) -> AgentCall:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return AgentCall(key="r001/a1/judge", role=role, prompt="You are the Accuracy Judge. marker-7f3a",
                     workdir=work, reply_schema=reply_schema(role), timeout_s=timeout_s,
                     transcript_path=tmp_path / "t" / "call.jsonl", model="fake-model")


def leftovers(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.mark.cli_agents
@NEEDS_NPM
@pytest.mark.parametrize("name", ["codex", "claude", "openai"])
def test_a_model_that_never_answers_times_out_and_leaves_nothing(tmp_path: Path, name: str) -> None:
    with FakeLLM([Turn(hang=True)]) as llm:
        opts = {"codex": {"base_url": llm.openai_base_url, "env_key": "PATH"},
                "claude": {"base_url": llm.anthropic_base_url, "max_retries": 0},
                "openai": {"base_url": llm.openai_base_url}}[name]
        harness = make_harness(name, **opts)
        harness.check()
        os.environ.setdefault("ANTHROPIC_API_KEY", "dummy")
        t0 = time.monotonic()
        result = harness.run(agent_call(tmp_path, timeout_s=4))
        took = time.monotonic() - t0
    assert result.exit_reason == ExitReason.TIMEOUT and result.reply is None
    assert took < 15
    assert leftovers("marker-7f3a") == []


@pytest.mark.slow
def test_replies_that_keep_failing_their_schema_fail_the_round(tmp_path: Path) -> None:
    shell = ToolCall(name="shell", arguments={"command": APPLY})
    script = round_script(shell, "mcp__issues__", reply_tool="submit")
    judge = next(i for i, t in enumerate(script.turns) if t.match == "You are the Accuracy Judge")
    script.turns[judge:judge + 1] = [Turn(match="You are the Accuracy Judge", malformed=True)] * 3
    with FakeLLM(script) as llm:
        args = [sys.executable, "-m", "vibeserve", "run", str(make_toy_target(tmp_path / "toy")), "--harness",
                "openai", "--model", "fake-model",
                "--rounds", "1", "--runs-dir", str(tmp_path / "runs"), "--run-id", "bad", "--no-report",
                "-O", f"base_url={llm.openai_base_url}"]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "OPENAI_API_KEY": "dummy", "HF_HUB_OFFLINE": "1"})
    # The run ends with its one round failed, and says so with a non-zero exit.
    assert proc.returncode == 1 and "every round failed (1 of 1)" in proc.stderr, proc.stderr
    db = sqlite3.connect(tmp_path / "runs" / "bad" / "run.db")
    status, result = db.execute("SELECT status, result FROM rounds WHERE round = 1").fetchone()
    assert status == "failed" and "no valid reply after 3 tries" in result
    keys = [k for (k,) in db.execute("SELECT key FROM agent_calls WHERE role = 'judge' ORDER BY key")]
    assert keys == ["r001/a1/judge", "r001/a1/judge/t2", "r001/a1/judge/t3"]
    # the benchmark never ran on an unjudged candidate
    assert db.execute("SELECT COUNT(*) FROM gates WHERE round = 1 AND gate = 'benchmark'").fetchone() == (0,)


@pytest.mark.parametrize("name", ["codex", "claude"])
def test_a_missing_cli_is_an_error_before_any_round(tmp_path: Path, name: str) -> None:
    from conftest import make_toy_target

    toy = make_toy_target(tmp_path / "toy")
    proc = subprocess.run(
        [sys.executable, "-m", "vibeserve", "run", str(toy), "--harness", name, "-O", "binary=/nonexistent/cli",
         "--runs-dir", str(tmp_path / "runs"), "--run-id", "x"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "/nonexistent/cli is not an executable file" in proc.stderr
    assert not (tmp_path / "runs" / "x").exists()


# -- skills installed in the worktree, as each harness sees them --------------------------------------

def skilled_call(tmp_path: Path, names: tuple[str, ...]) -> AgentCall:
    """An agent call whose worktree (a git repo, as in a run) has ``names`` installed as skills."""
    from vibeserve.skills.catalog import load_library
    from vibeserve.skills.install import install_skills

    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    install_skills([s for s in load_library() if s.name in names], work)
    return AgentCall(key="r001/a1/judge", role=Role.JUDGE, prompt="You are the Accuracy Judge.", workdir=work,
                     reply_schema=reply_schema(Role.JUDGE), timeout_s=120,
                     transcript_path=tmp_path / "t" / "call.jsonl", model="fake-model")


LISTED = "- prefix-caching: Prefix caching: keep the KV blocks of prompts"


@pytest.mark.cli_agents
@NEEDS_NPM
def test_codex_lists_installed_skills_and_reads_one(tmp_path: Path) -> None:
    call = skilled_call(tmp_path, ("prefix-caching",))
    shell = ToolCall(name="exec_command", arguments={"cmd": "cat .agents/skills/prefix-caching/SKILL.md"})
    with FakeLLM([Turn(tool_calls=[shell]), Turn(reply=PASS)]) as llm:
        harness = make_harness("codex", base_url=llm.openai_base_url, env_key="PATH")
        harness.check()
        result = harness.run(call)
        first = llm.model_requests[0].body
    assert result.exit_reason == ExitReason.OK, result.error
    developer = " ".join(str(m.get("content")) for m in first["input"] if m.get("role") == "developer")
    assert LISTED in developer and "prefix-caching/SKILL.md" in developer  # Codex's own skills listing
    assert "## Hash per full block" in call.transcript_path.read_text()  # the body, read by the model


@pytest.mark.cli_agents
@NEEDS_NPM
def test_claude_code_offers_installed_skills_through_its_skill_tool(tmp_path: Path) -> None:
    call = skilled_call(tmp_path, ("prefix-caching",))
    use = ToolCall(name="Skill", arguments={"skill": "prefix-caching"})
    with FakeLLM([Turn(tool_calls=[use]), Turn(reply=PASS)]) as llm:
        harness = make_harness("claude", base_url=llm.anthropic_base_url, max_retries=0)
        harness.check()
        os.environ.setdefault("ANTHROPIC_API_KEY", "dummy")
        result = harness.run(call)
        first, second = (r.body for r in llm.model_requests[:2])
    assert result.exit_reason == ExitReason.OK, result.error
    assert LISTED in json.dumps(first["messages"]) + json.dumps(first.get("system"))
    assert "## Hash per full block" in json.dumps(second["messages"][-1])  # the body loaded by the Skill tool


def test_builtin_agent_lists_and_loads_installed_skills(tmp_path: Path) -> None:
    call = skilled_call(tmp_path, ("prefix-caching", "paged-kv-cache"))
    turns = [Turn(tool_calls=[ToolCall(name="list_skills")]),
             Turn(tool_calls=[ToolCall(name="load_skill", arguments={"name": "paged-kv-cache"})]),
             Turn(tool_calls=[ToolCall(name="load_skill", arguments={"name": "paged-kv-cache",
                                                                     "file": "references/engines.md"})]),
             Turn(reply=PASS)]
    with FakeLLM(Script(reply_tool="submit", turns=turns)) as llm:
        result = make_harness("openai", base_url=llm.openai_base_url).run(call)
        offered = {t["function"]["name"] for t in llm.model_requests[0].body["tools"]}
    assert result.exit_reason == ExitReason.OK and result.reply == PASS, result.error
    assert {"list_skills", "load_skill"} <= offered
    outputs = [json.loads(line).get("output", "") for line in call.transcript_path.read_text().splitlines()
               if json.loads(line)["type"] == "tool_result"]
    assert outputs[0].startswith("- paged-kv-cache (algorithms): Paged KV cache (PagedAttention)")
    assert "- prefix-caching (algorithms)" in outputs[0]
    assert outputs[1].startswith("# Paged KV cache") and "scripts/paged_kv.py" in outputs[1]
    assert "## nano-vllm (smallest, read first)" in outputs[2]
