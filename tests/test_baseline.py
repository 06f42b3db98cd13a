"""``vibeserve baseline``, the control arm, on the toy target with a stock engine whose settings we control."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli
from vibeserve.errors import TargetError
from vibeserve.loop.search import RandomSearch, TpeSearch, all_settings, grid_size
from vibeserve.target.search_space import Param, with_values
from vibeserve.target.spec import load_target
from vibeserve.testing.toy_target import make_toy_target

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")

# A "stock engine" for the toy: its speed is a setting, and one flag makes it answer wrongly.
ENGINE = '''\
import argparse, json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse
ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--score", type=float, required=True)
ap.add_argument("--wrong", action="store_true")
a = ap.parse_args()
class H(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/health":
            body = {"status": "ok"}
        elif url.path == "/compute":
            x = int(parse_qs(url.query)["x"][0])
            body = {"y": x * x + (0 if a.wrong else 1)}
        elif url.path == "/stats":
            body = {"score": a.score}
        else:
            return self.send_error(404)
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
ThreadingHTTPServer(("127.0.0.1", a.port), H).serve_forever()
'''

BASELINE = '''
[baseline]
start = ["python", "{target}/engine.py", "--port", "{port}", "--score", "{score}", "{exact}"]
sampler = "random"
seed_runs = 2

[baseline.params.score]
choices = [0.5, 2.0]

[baseline.params.exact]
choices = ["", "--wrong"]
'''


def _toy(tmp_path: Path) -> Path:
    root = make_toy_target(tmp_path / "toy", repeats=1)
    (root / "engine.py").write_text(ENGINE)
    (root / "target.toml").write_text((root / "target.toml").read_text() + BASELINE)
    return root


def _rows(run_dir: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(run_dir / "run.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_every_trial_goes_through_the_gates_and_the_best_is_recorded(tmp_path: Path) -> None:
    root, runs = _toy(tmp_path), tmp_path / "runs"
    out = cli("baseline", str(root), "--budget-h", "1", "--trials", "4", "--runs-dir", str(runs), "--run-id", "b1",
              "--sandbox", "none", check=True)
    assert "baseline finished: trial budget reached (4 trials)" in out.stdout
    run_dir = runs / "b1"
    (policy, status, baseline, best, best_commit), = _rows(
        run_dir, "SELECT policy, status, baseline_metric, best_metric, best_commit FROM run")
    assert (policy, status, baseline, best) == ("baseline", "finished", 1.0, 2.0)
    rounds = _rows(run_dir, "SELECT round, status, metric, json_extract(task, '$.title') FROM rounds ORDER BY round")
    assert [r[:3] for r in rounds[:2]] == [(0, "kept", 1.0), (1, "accepted", 1.0)]  # best-of-2 of the seed
    assert rounds[1][3] == "seed run 2 of 2"
    trials = rounds[2:]
    assert len(trials) == 4 and len({r[3] for r in trials}) == 4  # every setting once
    for n, state, metric, title in trials:
        if "--wrong" in title:  # the setting that breaks accuracy: rejected by the checker, never benchmarked
            assert (state, metric) == ("rejected", None), title
            assert _rows(run_dir, f"SELECT gate, passed FROM gates WHERE round = {n}") == [("accuracy", 0)]
        else:
            assert state in ("kept", "accepted") and metric is not None, title
            gates = _rows(run_dir, f"SELECT gate, passed FROM gates WHERE round = {n}")
            assert gates == [("accuracy", 1), ("benchmark", 1)]
    # The best is a commit holding the setting that won, and the run branch points at it.
    shown = subprocess.run(["git", "show", f"{best_commit}:baseline-trial.json"], cwd=run_dir / "repo",
                           capture_output=True, text=True, check=True).stdout
    assert json.loads(shown)["params"] == {"score": 2.0, "exact": ""}
    assert "--wrong" not in json.loads(shown)["start"] and "" not in json.loads(shown)["start"]
    report = cli("report", "b1", "--runs-dir", str(runs), check=True)
    assert report.returncode == 0
    summary = (run_dir / "report" / "summary.md").read_text()
    assert "stock engine: score=2.0, exact=''" in summary and "accuracy checker failed it" in summary
    # The dashboard shows it like any run.
    from starlette.testclient import TestClient

    from vibeserve.ui.app import create_app
    from vibeserve.ui.data import RunSource

    page = TestClient(create_app(RunSource(runs)), base_url="http://127.0.0.1").get("/runs/b1")
    assert page.status_code == 200 and "stock engine: score=2.0" in page.text


def test_the_budget_stops_it_and_it_does_not_resume(tmp_path: Path) -> None:
    root, runs = _toy(tmp_path), tmp_path / "runs"
    out = cli("baseline", str(root), "--budget-h", "0.000001", "--runs-dir", str(runs), "--run-id", "b2",
              "--sandbox", "none", "--no-report", check=True)
    assert "wall-clock budget reached" in out.stdout
    assert _rows(runs / "b2", "SELECT round, status FROM rounds") == [(0, "kept")]  # the seed is always measured
    again = cli("resume", "b2", "--runs-dir", str(runs))
    assert again.returncode != 0 and "control arm" in again.stderr and "Traceback" not in again.stderr
    toml = root / "target.toml"
    toml.write_text(toml.read_text().split("[baseline]")[0])
    done = cli("baseline", str(root), "--budget-h", "1", "--runs-dir", str(runs), "--run-id", "b3")
    assert done.returncode != 0 and "no [baseline] table" in done.stderr and "Traceback" not in done.stderr
    assert not (runs / "b3").exists()


ENGINES = """
[baseline.engines.outside]      # a stock engine installed outside the target, as a separate virtualenv is
start = ["python", "{target}/../stock/engine.py", "--port", "{port}", "--score", "{score}"]
readable = ["../stock"]
check = ["python", "-c", "import pathlib, sys; sys.exit(0 if pathlib.Path('../stock/engine.py').is_file() else 'the stock engine is not installed: put it in ../stock')"]

[baseline.engines.outside.limits]   # it writes a 2 MiB file at start, over the target's log_mb = 1
log_mb = 4

[baseline.engines.outside.params.score]
choices = [3.0]
"""


@needs_bwrap
def test_another_engine_runs_boxed_from_its_own_readable_folder_after_its_check(tmp_path: Path) -> None:
    root, runs = _toy(tmp_path), tmp_path / "runs"
    (root / "target.toml").write_text((root / "target.toml").read_text() + ENGINES)
    unknown = cli("baseline", str(root), "--budget-h", "1", "--engine", "nope", "--runs-dir", str(runs))
    assert unknown.returncode != 0 and "no [baseline.engines.nope]" in unknown.stderr and "outside" in unknown.stderr
    missing = cli("baseline", str(root), "--budget-h", "1", "--engine", "outside", "--runs-dir", str(runs),
                  "--run-id", "b0")
    assert missing.returncode != 0 and "baseline.engines.outside.check" in missing.stderr
    assert "the stock engine is not installed" in missing.stderr and "Traceback" not in missing.stderr
    assert not (runs / "b0").exists()
    (tmp_path / "stock").mkdir()
    big_file = "import os; open(os.path.join(os.environ.get('TMPDIR', '/tmp'), 'queue'), 'wb').write(bytes(2 << 20))\n"
    (tmp_path / "stock" / "engine.py").write_text(big_file + ENGINE)
    toml = root / "target.toml"
    toml.write_text(toml.read_text() + "\n[limits]\nlog_mb = 1\n")
    out = cli("baseline", str(root), "--budget-h", "1", "--engine", "outside", "--seed-runs", "1", "--runs-dir",
              str(runs), "--run-id", "b4", "--no-report", check=True)
    assert "search space used up" in out.stdout
    rounds = _rows(runs / "b4", "SELECT round, status, metric, json_extract(task, '$.title') FROM rounds ORDER BY round")
    # Seen from inside the candidate's sandbox only because the engine names its folder readable.
    assert rounds == [(0, "kept", 1.0, "baseline"), (1, "kept", 3.0, "outside: score=3.0")], rounds


def test_a_bad_search_space_names_the_key(tmp_path: Path) -> None:
    root = _toy(tmp_path)
    toml = root / "target.toml"
    toml.write_text(toml.read_text().replace('"{exact}"]', '"{exakt}"]'))
    with pytest.raises(TargetError, match=r"baseline.start.*\{exakt\}"):
        load_target(root)
    toml.write_text(toml.read_text().replace('choices = ["", "--wrong"]', "low = 3\nhigh = 1"))
    with pytest.raises(TargetError, match="low .3. is above high .1."):
        load_target(root)
    toml.write_text(toml.read_text().replace("low = 3\nhigh = 1", 'choices = [""]') + ENGINES.replace("../stock\"]",
                                                                                                     "{stock}\"]"))
    with pytest.raises(TargetError, match=r"baseline.engines.outside.readable.*\{stock\}"):
        load_target(root)


def test_samplers_never_repeat_a_setting_and_stop_when_the_space_is_used_up() -> None:
    params = {"a": Param(choices=[1, 2, 3]), "b": Param(choices=["x", ""])}
    assert grid_size(params) == 6 and len(all_settings(params)) == 6
    rnd = RandomSearch(params, seed=7)
    got = [rnd.ask() for _ in range(6)]
    assert sorted(json.dumps(g, sort_keys=True) for g in got) == sorted(
        json.dumps(g, sort_keys=True) for g in all_settings(params))
    assert rnd.ask() is None
    ranged = RandomSearch({"n": Param(low=1, high=8, step=1), "f": Param(low=0.01, high=1.0, log=True)}, seed=1)
    for _ in range(20):
        v = ranged.ask()
        assert v is not None and isinstance(v["n"], int) and 1 <= v["n"] <= 8 and 0.01 <= v["f"] <= 1.0
    assert with_values(["run", "--n", "{a}", "{b}"], {"a": 3, "b": ""}) == ["run", "--n", "3"]
    pytest.importorskip("optuna")
    tpe = TpeSearch(params, seed=3, direction="max")
    seen = []
    while (v := tpe.ask()) is not None:
        seen.append(json.dumps(v, sort_keys=True))
        tpe.tell(float(v["a"]) if v["b"] == "x" else None)
    assert sorted(seen) == sorted(json.dumps(g, sort_keys=True) for g in all_settings(params))


def test_pause_stops_a_control_arm_after_its_trial_in_flight_and_steer_is_refused(tmp_path: Path) -> None:
    """`vibeserve pause` from another process while the control arm runs: the trial in flight is recorded,
    no further trial starts, and the run ends (a control arm does not resume); `steer` has no brief to reach."""
    root, runs = _toy(tmp_path), tmp_path / "runs"
    toml = root / "target.toml"  # a space far larger than the trials run before the pause arrives
    toml.write_text(toml.read_text().replace("choices = [0.5, 2.0]", f"choices = {[0.5 + i for i in range(40)]}"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vibeserve", "baseline", str(root), "--budget-h", "1", "--runs-dir",
                             str(runs), "--run-id", "b4", "--sandbox", "none", "--no-report"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not ((runs / "b4" / "run.db").is_file() and _rows(runs / "b4", "SELECT COUNT(*) FROM rounds")[0][0] >= 3):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the control arm recorded no trial within 120 s"
            time.sleep(0.1)
        steer = cli("steer", "b4", "try more", "--runs-dir", str(runs))
        assert steer.returncode != 0 and "control arm" in steer.stderr and "Traceback" not in steer.stderr
        pause = cli("pause", "b4", "--runs-dir", str(runs), check=True)
        assert "control arm b4 ends once its trial in flight is recorded" in pause.stdout
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped at the user's request" in out
    (status, reason), = _rows(runs / "b4", "SELECT status, stop_reason FROM run")
    assert status == "finished" and "vibeserve pause" in reason
    rounds = _rows(runs / "b4", "SELECT COUNT(*) FROM rounds")[0][0]
    assert 3 <= rounds < 2 + 80  # the seed runs and some trials, not the whole space
    assert _rows(runs / "b4", "SELECT kind, round FROM steering") == [("pause", rounds - 1)]
