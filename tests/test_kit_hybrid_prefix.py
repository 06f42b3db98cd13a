"""The hybrid-prefix-cpu kit: setup builds the Olmo-Hybrid model, `vibeserve validate` passes on the seed, and
the scripted trajectory's patches apply with the gate outcomes it claims (an uncopied prefix snapshot fails
the accuracy gate; the copying one and the batched decode pass it, reusing the shared prefix's state).

Sized down from the kit's own workload (a 2,048-token prefix, 16 requests) to a 150-word prefix and a few
requests, so the whole file stays short on 2 cores; what it checks does not depend on the size.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import kit_server
from conftest import cli
from vibeserve.bench.workload import WORDS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / "examples" / "targets" / "hybrid-prefix-cpu"
GPU_KIT = REPO / "examples" / "targets" / "olmo-hybrid-7b-l4"
TRAJECTORY = REPO / "examples" / "trajectories" / "hybrid-prefix-cpu"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def small_cases(path: Path) -> Path:
    """Two prompts sharing a 150-word prefix (more than two 64-token blocks) with different suffixes, one short."""
    rng = random.Random(3)
    prefix = " ".join(rng.choice(WORDS) for _ in range(150))
    cases = [
        {"id": "a", "kind": "completion", "prompt": prefix + " the old farm", "max_tokens": 8, "stream": True},
        {"id": "b", "kind": "completion", "prompt": prefix + " the cold sea at night", "max_tokens": 8,
         "stream": False},
        {"id": "c", "kind": "chat", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4,
         "stream": True},
    ]
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    return path


def serving(tree: Path, model: Path) -> contextlib.AbstractContextManager[str]:
    return kit_server.serving(tree, model, ENV)


def accuracy(url: str, model: Path, cases: Path, report: Path) -> tuple[int, dict]:
    done = subprocess.run([sys.executable, "checks/accuracy.py", "--url", url, "--model", str(model), "--cases",
                           str(cases), "--report", str(report)], cwd=KIT, env=ENV, capture_output=True, text=True,
                          timeout=600)
    return done.returncode, json.loads(report.read_text())


def apply_patch(tree: Path, name: str) -> None:
    done = subprocess.run(["git", "apply", str(TRAJECTORY / "patches" / name)], cwd=tree, capture_output=True,
                          text=True)
    assert done.returncode == 0, f"{name} does not apply: {done.stderr}"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hybrid") / "model"
    done = subprocess.run([sys.executable, "setup_model.py", "--out", str(out)], cwd=KIT, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.mark.long
def test_setup_builds_a_hybrid_model_from_its_config(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "olmo_hybrid"
    assert {"linear_attention", "full_attention"} <= set(config["layer_types"])
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    # The load generator's words are whole tokens, so its shared prefix is real text, not <unk>.
    assert set(WORDS) <= set(vocab)


@pytest.mark.long
def test_trajectory_patches_apply_and_the_gates_decide(model_dir, tmp_path):
    """Replayed as the trajectory's rounds do, each patch on top of the one before: the uncopied snapshot
    fails the accuracy gate on the second prompt sharing the prefix; the copying one passes and reports the
    shared prefix's tokens as reused, not prefilled again; batched decode passes alone and concurrently."""
    cases = small_cases(tmp_path / "cases.jsonl")
    tree = tmp_path / "deliverable"
    shutil.copytree(KIT / "seed", tree, ignore=shutil.ignore_patterns("__pycache__"))

    apply_patch(tree, "01a-prefix-state-reuse.patch")
    with serving(tree, model_dir) as url:
        code, report = accuracy(url, model_dir, cases, tmp_path / "01a.json")
    bad = [c for c in report["cases"] if c["status"] != "ok"]
    assert code == 1 and not report["passed"] and {c["status"] for c in bad} == {"mismatch"}, report
    # The first prompt sharing the prefix is right; the next one restores the state the first went on changing.
    assert ("b", "alone") in {(c["id"], c["mode"]) for c in bad} and ("a", "alone") not in {
        (c["id"], c["mode"]) for c in bad}, bad

    apply_patch(tree, "01b-copy-the-snapshots.patch")
    with serving(tree, model_dir) as url:
        code, report = accuracy(url, model_dir, cases, tmp_path / "01b.json")
        stats = httpx.get(url + "/stats").json()["prefix_cache"]
    assert code == 0 and report["passed"], report
    # Each prompt sharing the prefix after the first restored 128 tokens (two blocks) instead of prefilling them.
    assert stats["hits"] >= 3 and stats["reused_tokens"] >= 3 * 128, stats

    apply_patch(tree, "02-batched-decode.patch")
    with serving(tree, model_dir) as url:
        code, report = accuracy(url, model_dir, cases, tmp_path / "02.json")
        stats = httpx.get(url + "/stats").json()["prefix_cache"]
    assert code == 0 and report["passed"], report
    assert stats["hits"] >= 3 and stats["reused_tokens"] >= 3 * 128, stats


def test_gpu_variant_validates_offline_and_names_the_missing_weights(tmp_path):
    # The variant names the CPU kit's checker, cases and reference through [artifacts].kit: copy both side by side.
    kit = tmp_path / "olmo-hybrid-7b-l4"
    shutil.copytree(GPU_KIT, kit, ignore=shutil.ignore_patterns("artifacts", "__pycache__"))
    assert not (kit / "checks").exists() and not (kit / "reference").exists()
    alone = cli("validate", str(kit), "--sandbox", "none", timeout=120)  # the CPU kit is not beside it
    assert alone.returncode != 0 and "Traceback" not in alone.stderr
    assert "../hybrid-prefix-cpu" in alone.stdout + alone.stderr, alone.stdout + alone.stderr
    shutil.copytree(KIT, tmp_path / KIT.name, ignore=shutil.ignore_patterns("artifacts", "__pycache__"))
    done = cli("validate", str(kit), "--sandbox", "none", timeout=120)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "Traceback" not in out
    assert "Olmo-Hybrid-7B" in out and "artifacts/model" in out, out
