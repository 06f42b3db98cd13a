"""The issue-tracker MCP server: a real stdio subprocess driven by the official SDK client."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from vibeserve.policies.board import IssueBoard
from vibeserve.policies.issue_tracker_mcp import (
    COMMON_TOOLS,
    MODULE,
    ORCHESTRATOR_TOOLS,
    build_server,
    server_spec,
)
from vibeserve.store.db import RunStore

BASE = "b" * 40


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    s = RunStore.create(tmp_path / "run")
    s.init_run("run-1", "target", "issue-tracker", {}, {})
    s.update_run(baseline_commit=BASE, baseline_metric=5.0)
    yield s
    s.close()


def stdio(store: RunStore, call_key: str, role: str) -> Client:
    spec = server_spec(store.dir, call_key, role)
    return Client(StdioServerParameters(command=spec.command[0], args=spec.command[1:]))


def text(result: Any) -> str:
    return "\n".join(c.text for c in result.content)


def test_orchestrator_tools_change_the_store_over_stdio(store: RunStore) -> None:
    board = IssueBoard(store)

    async def session() -> None:
        async with stdio(store, "r001/orchestrator", "orchestrator") as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert names == set(COMMON_TOOLS + ORCHESTRATOR_TOOLS)

            made = await c.call_tool("create_issue", {
                "title": "Batch requests", "hypothesis": "one forward pass per step",
                "acceptance_criteria": ["tok/s up 2x"], "priority": 1,
            })
            assert not made.is_error and made.structured_content["id"] == 1
            assert board.get_issue(1).created_by == "r001/orchestrator"

            bad = await c.call_tool("pick_next", {"issue_id": 42, "start_commit": "best"})
            assert bad.is_error
            assert "issue 42 does not exist; call list_issues" in text(bad)
            bad_commit = await c.call_tool("pick_next", {"issue_id": 1, "start_commit": "0123456789abcdef"})
            assert bad_commit.is_error and "not a start point" in text(bad_commit)

            # The server is still serving after the refusals.
            ok = await c.call_tool("pick_next", {"issue_id": 1, "start_commit": "baseline"})
            assert not ok.is_error and ok.structured_content["start_commit"] == BASE

            upd = await c.call_tool("update_issue", {"issue_id": 1, "notes": "picked for r001"})
            assert upd.structured_content["notes"] == "picked for r001"
            saved = await c.call_tool("write_memory", {"text": "- batching first\n"})
            assert not saved.is_error
            mem = await c.call_tool("read_memory", {})
            assert "batching first" in text(mem)
            rev = await c.call_tool("revert", {"commit": "baseline", "reason": "regression"})
            assert rev.structured_content["commit"] == BASE
            cands = await c.call_tool("list_candidates", {})
            assert cands.structured_content["result"][0]["commit"] == BASE
            listed = await c.call_tool("list_issues", {"status": "in_progress"})
            assert [i["id"] for i in listed.structured_content["result"]] == [1]

    anyio.run(session)
    assert board.pick_for("r001/orchestrator") == (1, BASE)
    assert board.get_issue(1).status == "in_progress"
    assert store.memory_path.read_text() == "- batching first\n"
    assert [r.commit for r in board.reverts_for("r001/orchestrator")] == [BASE]


def test_implementer_gets_no_orchestrator_tools(store: RunStore) -> None:
    async def session() -> tuple[set[str], bool, str]:
        async with stdio(store, "r001/a1/implementer", "implementer") as c:
            names = {t.name for t in (await c.list_tools()).tools}
            made = await c.call_tool("create_issue", {"title": "Found: tokenizer is slow", "hypothesis": "h",
                                                      "acceptance_criteria": []})
            assert not made.is_error
            res = await c.call_tool("pick_next", {"issue_id": 1})
            return names, res.is_error, text(res)

    names, refused, message = anyio.run(session)
    assert names == set(COMMON_TOOLS)
    assert not names & set(ORCHESTRATOR_TOOLS)
    assert refused and "Unknown tool: pick_next" in message
    board = IssueBoard(store)
    assert board.pick_for("r001/a1/implementer") is None
    assert board.get_issue(1).status == "open"
    assert board.get_issue(1).created_by == "r001/a1/implementer"


def test_in_process_server_reports_argument_errors_as_tool_errors(store: RunStore) -> None:
    async def session() -> None:
        async with Client(build_server(store, "r002/orchestrator", "orchestrator")) as c:
            res = await c.call_tool("create_issue", {"title": "x", "hypothesis": "h", "acceptance_criteria": [],
                                                     "priority": 9})
            assert res.is_error and "priority" in text(res)
            res = await c.call_tool("update_issue", {"issue_id": 3, "status": "done"})
            assert res.is_error and "issue 3 does not exist" in text(res)
            res = await c.call_tool("update_issue", {"issue_id": 3, "status": "finished"})
            assert res.is_error
            assert (await c.call_tool("list_issues", {})).structured_content == {"result": []}

    anyio.run(session)
    assert IssueBoard(store).list_issues() == []


def test_a_run_dir_without_a_store_exits_with_a_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", MODULE, "--run-dir", str(tmp_path / "nope"), "--call-key", "k", "--role", "judge"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "is not a vibeserve run" in done.stderr and "Traceback" not in done.stderr
