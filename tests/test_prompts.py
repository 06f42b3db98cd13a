"""Role prompts are snapshot-tested; reply schemas are strict. Set UPDATE_SNAPSHOTS=1 to rewrite snapshots."""

from __future__ import annotations

import os
from pathlib import Path

import jinja2
import pytest

from vibeserve.roles import ReplyInvalid, parse_reply, render_prompt, reply_schema
from vibeserve.target.spec import load_target
from vibeserve.types import GateName, GateVerdict, Role, Task

SNAPSHOTS = Path(__file__).parent / "snapshots"


@pytest.fixture
def context(toy: Path) -> dict:
    target = load_target(toy)
    return {
        "round": 2, "target": target.spec, "instructions": "Serve f(x).", "baseline_metric": 1.0,
        "best_metric": 2.0, "best_commit": "abc123", "history": [
            {"round": 1, "status": "kept", "metric": 2.0, "title": "Raise the score", "reason": ""}],
    }


TASK = Task(start_commit="abc123", brief="Batch the requests.", acceptance_criteria=["same outputs"], issue_id=1,
            title="Batching")


def prompts(context: dict) -> dict[str, str]:
    verdict = GateVerdict(gate=GateName.ACCURACY, passed=True, commit="def456")
    return {
        "orchestrator": render_prompt(Role.ORCHESTRATOR, **context, memory="# memory\n- batching helps\n"),
        "implementer": render_prompt(
            Role.IMPLEMENTER, **context, task=TASK, attempt=2, feedback="The accuracy gate failed: x=3",
            workdir="/runs/x/worktrees/r002", start_command="python server.py --port {port}",
            artifacts={"table": "/t/artifacts/table.json"}, target_root="/t"),
        "judge": render_prompt(Role.JUDGE, **context, task=TASK, verdicts=[verdict], diff="+batch = []",
                               changed_files=["server.py"],
                               static_findings=["prompt_keyed_table: server.py:12: seen[prompt] = out"]),
        "evaluator": render_prompt(Role.EVALUATOR, **context, task=TASK, metric=2.5, samples=[2.5, 2.5], spread=0.0,
                                   best_before=2.0, baseline=1.0, repeats=2, workdir="/runs/x/worktrees/r002"),
    }


def test_prompts_match_their_snapshots(context: dict) -> None:
    for role, text in prompts(context).items():
        snap = SNAPSHOTS / f"{role}.txt"
        if os.environ.get("UPDATE_SNAPSHOTS"):
            snap.write_text(text)
        assert text == snap.read_text(), f"prompt of {role} changed; rerun with UPDATE_SNAPSHOTS=1 if intended"


def test_a_missing_prompt_variable_is_an_error(context: dict) -> None:
    with pytest.raises(jinja2.UndefinedError):
        render_prompt(Role.JUDGE, **context, task=TASK, verdicts=[])


def test_reply_schemas_are_strict_and_validated() -> None:
    schema = reply_schema(Role.JUDGE)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"verdict", "reasons", "reward_hacking", "criteria_met"}
    ok = parse_reply(Role.JUDGE, {"verdict": "pass", "reasons": "fine", "reward_hacking": False, "criteria_met": True})
    assert ok.verdict == "pass"
    for bad in (None, {"verdict": "maybe"}, {"summary": "x", "extra": 1}):
        with pytest.raises(ReplyInvalid):
            parse_reply(Role.JUDGE if bad is None or "verdict" in bad else Role.IMPLEMENTER, bad)
