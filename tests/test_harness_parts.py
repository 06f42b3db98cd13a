"""Harness pieces: price table, a CLI agent's environment, per-role harness choice from a run config."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from conftest import cli
from test_loop import EVAL, PASS, implementer, orchestrator
from vibeserve.errors import VibeserveError
from vibeserve.harness.pricing import PriceTable
from vibeserve.harness.transcript import agent_env
from vibeserve.testing.fake_llm import FakeLLM, Script, Turn


def test_price_table_costs_tokens_and_knows_what_it_does_not_know(tmp_path: Path) -> None:
    mine = tmp_path / "prices.toml"
    mine.write_text('["m"]\ninput = 2.0\noutput = 8.0\ncached_input = 0.5\n')
    table = PriceTable.load(mine)
    assert table.cost("m", tokens_in=1_000_000, tokens_out=500_000, tokens_cached=400_000) == pytest.approx(
        0.6 * 2.0 + 0.4 * 0.5 + 0.5 * 8.0)
    assert table.cost("fake-model", 10, 10) == 0.0
    assert table.cost("unknown-model", 10, 10) is None
    mine.write_text('["m"]\ninput = -1\noutput = 1\n')
    with pytest.raises(VibeserveError, match="bad price entry"):
        PriceTable.load(mine)


def test_agent_env_has_only_its_own_provider_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-anthropic")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    env = agent_env(("OPENAI_API_KEY",), {"CODEX_HOME": "/x"})
    assert env["OPENAI_API_KEY"] == "sk-openai" and env["CODEX_HOME"] == "/x"
    assert "ANTHROPIC_API_KEY" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "127.0.0.1" in env["NO_PROXY"].split(",") and "localhost" in env["NO_PROXY"].split(",")
    assert env["PATH"] == os.environ["PATH"]


def test_run_config_picks_harness_and_model_per_role(toy: Path, trajectory, tmp_path: Path) -> None:
    traj = trajectory([
        orchestrator(1, "Raise the score"),
        implementer("r001/a1/implementer", {"score.txt": "2.0\n"}),
        {"key": "r*/a*/judge", "reply": PASS},
    ])
    with FakeLLM(Script(reply_tool="submit", turns=[Turn(reply=EVAL)])) as llm:
        config = tmp_path / "run.toml"
        config.write_text(
            f'harness = "scripted"\n[harness_options]\ntrajectory = "{traj}"\n'
            f'[roles.evaluator]\nharness = "openai"\nmodel = "fake-model"\n'
            f'options = {{ base_url = "{llm.openai_base_url}" }}\n')
        os.environ.setdefault("OPENAI_API_KEY", "dummy")
        cli("run", str(toy), "--config", str(config), "--runs-dir", str(tmp_path / "runs"), "--run-id", "cfg",
            "--rounds", "1", check=True)
    db = sqlite3.connect(tmp_path / "runs" / "cfg" / "run.db")
    used = dict(db.execute("SELECT role, harness || ':' || COALESCE(model, '') FROM agent_calls"))
    assert used == {"orchestrator": "scripted:", "implementer": "scripted:", "judge": "scripted:",
                    "evaluator": "openai:fake-model"}
    assert db.execute("SELECT status FROM rounds WHERE round = 1").fetchone() == ("kept",)


def test_builtin_agent_stops_at_its_step_budget(tmp_path: Path) -> None:
    from vibeserve.harness import make_harness
    from vibeserve.roles import reply_schema
    from vibeserve.testing.fake_llm import ToolCall
    from vibeserve.types import AgentCall, ExitReason, Role

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "a.txt").write_text("x" * 5000)
    turns = [Turn(tool_calls=[ToolCall(name="read_file", arguments={"path": "a.txt"})]) for _ in range(3)]
    with FakeLLM(Script(reply_tool="submit", turns=turns)) as llm:
        harness = make_harness("openai", base_url=llm.openai_base_url, max_steps=3, max_context_chars=8000)
        call = AgentCall(key="k", role=Role.JUDGE, prompt="judge", workdir=tmp_path / "w",
                         reply_schema=reply_schema(Role.JUDGE), transcript_path=tmp_path / "t.jsonl")
        os.environ.setdefault("OPENAI_API_KEY", "dummy")
        result = harness.run(call)
        second = llm.model_requests[1].body["messages"]
        third = llm.model_requests[2].body["messages"]
    assert result.exit_reason == ExitReason.ERROR and "step budget" in result.error
    assert len(llm.model_requests) == 3
    assert [m["content"] for m in second if m["role"] == "tool"] == ["x" * 5000]  # fits: kept whole
    assert [m["content"] for m in third if m["role"] == "tool"] == ["[trimmed]", "x" * 5000]  # oldest trimmed
    assert result.reply is None


def test_candidate_servers_get_no_credentials(toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vibeserve.gates import CandidateServer
    from vibeserve.target.spec import load_target

    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok")
    server_py = toy / "seed" / "server.py"
    server_py.write_text("import json, os\njson.dump(dict(os.environ), open('env.json', 'w'))\n" + server_py.read_text())
    with CandidateServer(load_target(toy), toy / "seed", tmp_path / "logs", "server"):
        pass
    seen = json.loads((toy / "seed" / "env.json").read_text())
    assert "OPENAI_API_KEY" not in seen and "MY_SERVICE_TOKEN" not in seen
    assert seen["HF_HUB_OFFLINE"] == "1"
