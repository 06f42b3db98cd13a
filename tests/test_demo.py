"""The README's main job: the scripted tiny-llama trajectory through the real loop, gates and report."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import REPO, cli
from vibeserve.loop.setup import ensure_artifacts
from vibeserve.target.spec import load_target

TINY = REPO / "examples" / "targets" / "tiny-llama"


def tiny_llama_copy(dest: Path) -> Path:
    """The example target with the output audit on 12 answers a gate (set in its target.toml, as a user
    would): the audit of every answer is tested with the reward-hacking corpus; here it would triple the
    time this end-to-end run takes on a shared 2-core machine."""
    ensure_artifacts(load_target(TINY), dest.parent / "setup-logs")
    shutil.copytree(TINY, dest, ignore=shutil.ignore_patterns("artifacts", "__pycache__"))
    (dest / "artifacts").symlink_to(TINY / "artifacts", target_is_directory=True)
    toml = dest / "target.toml"
    toml.write_text(toml.read_text().replace("warmup = 0", "warmup = 0\naudit_samples = 12"))
    return dest


@pytest.mark.slow
def test_demo_trajectory_runs_end_to_end(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    out = cli("run", str(tiny_llama_copy(tmp_path / "tiny-llama")), "--trajectory",
              str(REPO / "examples/trajectories/tiny-llama"), "--runs-dir", str(runs), "--run-id", "demo",
              "--rounds", "2", timeout=1200, check=True)
    assert "round budget reached (2 rounds)" in out.stdout
    db = sqlite3.connect(runs / "demo" / "run.db")
    rounds = db.execute("SELECT round, status, metric FROM rounds ORDER BY round").fetchall()
    assert [r[0] for r in rounds] == [0, 1, 2]
    assert all(status in ("kept", "accepted") for _, status, _ in rounds)  # measured, not scripted
    assert all(metric > 0 for *_, metric in rounds)
    # the attempt that drops the EOS check is rejected by the accuracy gate, before any judge sees it
    gates = db.execute("SELECT attempt, gate, passed FROM gates WHERE round = 2 ORDER BY id").fetchall()
    assert gates == [(1, "accuracy", 0), (2, "accuracy", 1), (2, "probes", 1), (2, "benchmark", 1)]
    audit = db.execute("SELECT json_extract(report, '$.audit.passed'), json_extract(report, '$.audit.checked') "
                       "FROM gates WHERE round = 2 AND gate = 'benchmark'").fetchone()
    # answers of one timed repeat (the seed picks which, after they all ran) equal the reference
    assert audit == (1, 12)
    keys = {k for (k,) in db.execute("SELECT key FROM agent_calls")}
    assert "r002/a1/judge" not in keys and "r002/a2/judge" in keys
    feedback = (runs / "demo" / "transcripts" / "r002-a2-implementer.jsonl").read_text()
    assert "The accuracy gate failed" in feedback
    best, = db.execute("SELECT best_metric FROM run").fetchone()
    assert best == max(m for _, s, m in rounds if s == "kept")
    report = runs / "demo" / "report"
    assert (report / "index.html").is_file() and (report / "trajectory.png").stat().st_size > 10_000
