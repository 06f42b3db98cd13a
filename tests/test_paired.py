"""Paired measurement (``[benchmark].paired``) on the toy target, on a simulated machine whose speed drifts.

The toy server declares its speed (``score.txt``); the benchmark here multiplies it by the machine's speed at
that moment: a step that changes every two benchmark runs (other work coming and going) times a 0.2%
jitter. Every number is fixed by the order of the runs, so the verdicts are the same on any machine.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from conftest import cli
from vibeserve.errors import TargetError
from vibeserve.gates.objectives import decide, rules_of, values_of
from vibeserve.gates.paired import paired_keep, ratio_interval, t_quantile
from vibeserve.report import write_report
from vibeserve.store import RunStore
from vibeserve.target.spec import load_target
from vibeserve.testing.toy_target import make_toy_target

# The benchmark of a machine whose speed steps by up to 35% every two runs. The count of runs is kept in
# the gate's log folder (the best's runs are in its "best" subfolder), outside the target.
DRIFT_BENCH = '''\
import argparse, json, pathlib, urllib.request
ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--out", required=True)
a = ap.parse_args()
out = pathlib.Path(a.out)
gate = out.parent.parent if out.parent.name == "best" else out.parent
counter = gate / "machine-runs.txt"
k = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(k + 1))
speed = [1.0, 0.8, 1.15, 0.9, 1.1, 0.85, 1.05][(k // 2) % 7] * (1.002 if k % 2 == 0 else 0.998)
with urllib.request.urlopen(a.url + "/stats", timeout=5) as r:
    score = json.load(r)["score"]
json.dump({"score": score * speed, "completed": 1}, open(a.out, "w"))
'''


def test_t_quantiles_match_the_tables() -> None:
    for p, df, want in [(0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776), (0.95, 10, 1.812),
                        (0.995, 3, 5.841)]:
        assert t_quantile(p, df) == pytest.approx(want, abs=2e-3)
    geo, lo, hi = ratio_interval([1.1, 1.1, 1.1], 0.95)
    assert (geo, lo, hi) == pytest.approx((1.1, 1.1, 1.1))
    geo, lo, hi = ratio_interval([1.0, 1.2], 0.95)
    assert lo < 1.0 < 1.2 < hi and geo == pytest.approx(math.sqrt(1.2))


def test_the_keep_rule_reads_the_interval_for_both_directions() -> None:
    paired = {"ratios": [1.05, 1.06], "ratio": 1.055, "interval": [1.04, 1.07], "confidence": 0.95}
    assert paired_keep(paired, "max", 0.03)[0]
    kept, why = paired_keep(paired, "max", 0.05)
    assert not kept and "lower end at least 1.05" in why and "[1.04, 1.07]" in why
    latency = {**paired, "ratio": 0.95, "interval": [0.94, 0.96]}  # candidate/best of a latency: lower is better
    assert paired_keep(latency, "min", 0.03)[0]
    assert not paired_keep(latency, "min", 0.07)[0]


def test_paired_needs_two_pairs_and_one_objective(tmp_path: Path) -> None:
    root = make_toy_target(tmp_path / "t", repeats=1)
    toml = root / "target.toml"
    toml.write_text(toml.read_text().replace("min_gain = 0.03", "min_gain = 0.03\npaired = true"))
    with pytest.raises(TargetError, match="at least 2 repeats"):
        load_target(root)
    toml.write_text(toml.read_text().replace("repeats = 1", "repeats = 2") + "\n[[benchmark.objectives]]\n"
                    'metric = "latency_ms"\ndirection = "min"\n')
    with pytest.raises(TargetError, match="primary metric only"):
        load_target(root)


def _rows(run_dir: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(run_dir / "run.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_small_real_gain_is_kept_paired_and_an_equal_candidate_is_not(tmp_path: Path, trajectory) -> None:
    import json

    root = make_toy_target(tmp_path / "toy", rounds=2, repeats=3)
    (root / "checks" / "bench.py").write_text(DRIFT_BENCH)
    toml = root / "target.toml"
    toml.write_text(toml.read_text().replace("min_gain = 0.03", "min_gain = 0.03\nwarmup = 0\npaired = true"))
    judge = {"verdict": "pass", "reasons": "honest", "reward_hacking": False, "criteria_met": True}
    traj = trajectory([
        {"key": "r001/a1/implementer", "files": {"score.txt": "1.06\n"}, "reply": {"summary": "6% faster"}},
        {"key": "r002/a1/implementer", "files": {"NOTES.md": "same speed\n"}, "reply": {"summary": "no change"}},
        {"key": "r*/a*/judge", "reply": judge},
        {"key": "r*/a*/evaluator", "reply": {"analysis": "ok", "hints": []}},
    ])
    runs = tmp_path / "runs"
    cli("run", str(root), "--policy", "ralph", "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id",
        "p1", "--sandbox", "none", "--no-report", check=True)
    run_dir = runs / "p1"
    assert _rows(run_dir, "SELECT round, status FROM rounds ORDER BY round") == [
        (0, "kept"), (1, "kept"), (2, "accepted")]
    (best,) = _rows(run_dir, "SELECT candidate FROM rounds WHERE round = 1")[0]
    assert _rows(run_dir, "SELECT best_commit FROM run")[0][0] == best

    (r1,), (r2,) = _rows(run_dir, "SELECT report FROM gates WHERE gate = 'benchmark' AND round > 0 ORDER BY round")
    one, two = json.loads(r1)["paired"], json.loads(r2)["paired"]
    assert one["order"] == ["AB", "BA", "AB"] and len(one["ratios"]) == 3
    assert one["interval"][0] >= 1.03 and one["ratio"] == pytest.approx(1.06, rel=3e-3)
    assert two["best_commit"] == best and two["interval"][0] < 1.0 < two["interval"][1]
    # The best's runs are its own: the output audit and the candidate's repeats never mix with them.
    assert len(list((run_dir / "logs" / "r001" / "a1" / "benchmark" / "best").glob("bench[0-9].json"))) == 3

    # The same measurements judged unpaired: the drift (up to 35%) hides the 6% gain.
    rules = rules_of(load_target(root).spec.benchmark.model_dump())
    kept, why = decide(rules, values_of("score", one["candidate"], {}), {"score": sorted(one["best"])[1]})
    assert not kept and "not kept" in why

    reasons = dict(_rows(run_dir, "SELECT round, json_extract(result, '$.reason') FROM rounds WHERE round > 0"))
    assert "kept: paired over 3 pairs" in reasons[1] and "not kept: paired over 3 pairs" in reasons[2]
    store = RunStore.open(run_dir)
    try:
        write_report(store, run_dir / "report")
    finally:
        store.close()
    summary = (run_dir / "report" / "summary.md").read_text()
    assert "kept: paired over 3 pairs, candidate/best = 1.06" in summary
    assert f"paired with {best[:10]} (AB BA AB)" in summary and "t-interval on log ratios" in summary
