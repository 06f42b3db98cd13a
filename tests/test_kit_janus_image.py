"""The janus-image-cpu kit (the paper's scenario F on 2 cores) and its janus-pro-7b-h100 variant: the workload
speaks the model's vocabulary, the tolerance is declared once, the trajectory's patches apply in round
order, the GPU variant validates offline and names its missing weights, and (long) the trajectory replayed
through the real loop meets each gate outcome it claims.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / "examples" / "targets" / "janus-image-cpu"
GPU_KIT = REPO / "examples" / "targets" / "janus-pro-7b-h100"
TRAJECTORY = REPO / "examples" / "trajectories" / "janus-image-cpu"
PATCHES = ["01-prefix-kv-reuse.patch", "02a-guidance-stride-8.patch", "02b-guidance-stride-2.patch"]
WORD = re.compile(r"\w+|[^\w\s]+")  # the kit tokenizer's pre-tokenizer (Whitespace)


def module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_prompt_the_kit_sends_is_in_the_models_vocabulary() -> None:
    vocab = set(module(KIT / "setup_model.py", "janus_setup").vocabulary())
    bench = module(KIT / "checks" / "bench.py", "janus_bench")
    prompts = [json.loads(line)["prompt"] for name in ("checks/prompts.jsonl", "checks/cases.jsonl",
               "reference/sample.jsonl") for line in (KIT / name).read_text().splitlines() if line.strip()]
    assert len(prompts) >= 10
    unknown = {w for p in prompts for w in WORD.findall(p) if w not in vocab}
    unknown |= {w for w in bench.NONCE_WORDS if w not in vocab}
    assert not unknown, f"words the tokenizer turns into <unk>: {sorted(unknown)}"


def test_the_tolerance_is_declared_once_and_the_gpu_variant_shares_every_file() -> None:
    compare = module(KIT / "checks" / "compare.py", "janus_compare")
    assert compare.declared_min_agreement(KIT / "target.toml") == 0.45
    assert compare.declared_min_agreement(GPU_KIT / "target.toml") == 0.45
    # Nothing is copied into the variant: checker, comparator, benchmark, reference and seed are the CPU kit's.
    assert not (GPU_KIT / "checks").exists() and not (GPU_KIT / "reference").exists()
    assert not (GPU_KIT / "seed").exists()
    toml = (GPU_KIT / "target.toml").read_text()
    for used in ("{artifacts.kit}/checks/accuracy.py", "{artifacts.kit}/checks/compare.py",
                 "{artifacts.kit}/checks/bench.py", "{artifacts.kit}/reference/generate.py",
                 'seed = "../janus-image-cpu/seed"'):
        assert used in toml, used


def test_the_trajectory_patches_apply_in_round_order(tmp_path: Path) -> None:
    tree = tmp_path / "deliverable"
    shutil.copytree(KIT / "seed", tree, ignore=shutil.ignore_patterns("__pycache__"))
    for name in PATCHES:
        done = subprocess.run(["git", "apply", str(TRAJECTORY / "patches" / name)], cwd=tree, capture_output=True,
                              text=True)
        assert done.returncode == 0, f"{name} does not apply: {done.stderr}"
        engine = (tree / "server" / "engine.py").read_text()
        assert "use_cache=False" not in engine  # from round 1 on, no step recomputes the sequence
    assert "GUIDANCE_STRIDE = 2" in engine and "uncond_cache" in engine


def test_gpu_variant_validates_offline_and_names_the_missing_weights(tmp_path: Path) -> None:
    kits = tmp_path / "targets"
    shutil.copytree(KIT, kits / KIT.name, ignore=shutil.ignore_patterns("artifacts", "__pycache__"))
    shutil.copytree(GPU_KIT, kits / GPU_KIT.name, ignore=shutil.ignore_patterns("artifacts", "__pycache__"))
    done = cli("validate", str(kits / GPU_KIT.name), "--sandbox", "none", timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in out, out
    assert "Janus-Pro-7B" in out and "artifacts/model" in out and "JANUS_PRO_7B" in out, out


@pytest.mark.slow
@pytest.mark.long
def test_the_trajectory_replayed_through_the_loop_meets_each_gate_outcome(tmp_path: Path) -> None:
    """Round 1 (KV reuse) is exact and kept; round 2's stride 8 fails the accuracy gate on the tolerance, and
    stride 2 passes every gate, probes and output audit included, under it without being exact."""
    kit = tmp_path / KIT.name
    shutil.copytree(KIT, kit, ignore=shutil.ignore_patterns("artifacts", "__pycache__"))
    runs = tmp_path / "runs"
    done = cli("run", str(kit), "--trajectory", str(TRAJECTORY), "--runs-dir", str(runs), "--run-id", "janus",
               "--rounds", "2", "--sandbox", "none", "--no-report", timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    db = sqlite3.connect(runs / "janus" / "run.db")
    rounds = dict(db.execute("SELECT round, status FROM rounds").fetchall())
    assert rounds[0] in ("kept", "accepted") and rounds[1] == "kept", rounds
    assert rounds[2] in ("kept", "accepted"), rounds  # stride 2 is within the tolerance; its speed is measured
    gates = db.execute("SELECT attempt, gate, passed, reason, report FROM gates WHERE round = 2 ORDER BY id").fetchall()
    assert [(a, g, p) for a, g, p, _, _ in gates] == [(1, "accuracy", 0), (2, "accuracy", 1), (2, "probes", 1),
                                                       (2, "benchmark", 1)], gates
    assert "guided argmax" in gates[0][3] and "below 0.45" in gates[0][3], gates[0][3]
    probes = json.loads(gates[2][4])["probes"]
    assert probes and all(0.45 <= p["score"] < 1 for p in probes), probes  # inside the tolerance, not exact
    audit = json.loads(gates[3][4])["audit"]
    assert audit["passed"] and audit["checked"] == 2, audit
    r1 = db.execute("SELECT report FROM gates WHERE round = 1 AND gate = 'probes'").fetchone()[0]
    assert all(p["score"] == 1.0 for p in json.loads(r1)["probes"])  # round 1 is exact
    metrics = dict(db.execute("SELECT round, metric FROM rounds").fetchall())
    assert metrics[1] < metrics[0] / 1.05, metrics  # KV reuse is faster than the seed by more than min_gain
    print(json.dumps({"p50_latency_ms": metrics}), file=sys.stderr)


@pytest.mark.slow
@pytest.mark.long
def test_validate_passes_on_a_fresh_copy(tmp_path: Path) -> None:
    """``vibeserve validate`` on the kit as a fresh clone has it (no artifacts), under the default sandbox:
    [setup] builds the model, the reference makes its images, and the seed passes the checker, the probes
    (judged by the declared comparator) and the benchmark with its output audit."""
    copy = tmp_path / KIT.name
    shutil.copytree(KIT, copy, ignore=shutil.ignore_patterns("artifacts", "__pycache__"))
    done = cli("validate", str(copy), timeout=3600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    for step in ("setup", "reference", "accuracy", "probes", "benchmark"):
        assert f"ok  {step}:" in out, out[-6000:]
    assert "is a valid target" in out, out[-6000:]
