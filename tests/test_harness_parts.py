"""Harness pieces: price table, a CLI agent's environment, per-role harness choice from a run config."""

from __future__ import annotations

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
