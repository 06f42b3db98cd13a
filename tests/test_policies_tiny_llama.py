"""The evolutionary policy with rounds in flight on Ray, end to end on a real model (tiny-llama, a random
2-layer Llama): real patches to its seed server, judged by its real gates. The issue tracker's run on it is
test_demo; ralph's flow (the same brief, memory.md carried) is test_policy_ralph's, on the toy target.

One timed repeat per benchmark here: these runs check what each policy does with the gates' verdicts, and
the numbers' noise is the gain rule's business (tested in test_store_and_gates)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, cli
from test_demo import tiny_llama_copy
from test_loop import rows

pytestmark = pytest.mark.slow

PATCHES = REPO / "examples" / "trajectories" / "tiny-llama" / "patches"
THREAD, DETOK = "patches/01-one-torch-thread.patch", "patches/02-incremental-detokenize.patch"
JUDGE = {"key": "r*/a*/judge", "reply": {"verdict": "pass", "reasons": "serving path only", "reward_hacking": False,
                                         "criteria_met": True}}
EVALUATOR = {"key": "r*/a*/evaluator", "reply": {"analysis": "the forward at batch 1", "hints": ["batch decode"]}}
TECHNIQUES = {"batching": "none", "kv_cache": "contiguous", "precision": "fp32", "decoding": "plain",
              "kernels": "eager"}


def with_patches(traj: Path) -> Path:
    """The trajectory with the tiny-llama demo's patches beside it (a trajectory's paths are its own). The
    demo's second honest change (02b) is its retry on top of a rejected attempt (02a); here it is made into
    one change from the seed."""
    shutil.copytree(PATCHES, traj / "patches")
    repo = traj.parent / "seed-repo"
    shutil.copytree(REPO / "examples" / "targets" / "tiny-llama" / "seed", repo)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "seed"], check=True)
    for patch in ("02a-skip-eos-check.patch", "02b-incremental-detokenize.patch"):
        subprocess.run([*git, "apply", str(PATCHES / patch)], check=True)
    diff = subprocess.run([*git, "diff"], check=True, capture_output=True, text=True).stdout
    (traj / DETOK).write_text(diff)
    return traj


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    target = tiny_llama_copy(tmp_path / "tiny-llama")
    toml = target / "target.toml"
    toml.write_text(toml.read_text().replace("repeats = 2", "repeats = 1"))
    return target


@pytest.mark.long
def test_evolutionary_on_tiny_llama_with_two_rounds_in_flight_on_ray(tiny: Path, trajectory, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'vibeserve[ray]')")
    traj = with_patches(trajectory([
        {"key": "r001/a1/implementer", "patch": THREAD,
         "mcp": [{"tool": "report_techniques", "arguments": TECHNIQUES}], "reply": {"summary": "one thread"}},
        {"key": "r002/a1/implementer", "patch": DETOK,
         "mcp": [{"tool": "report_techniques", "arguments": TECHNIQUES}], "reply": {"summary": "detokenize"}},
        JUDGE, EVALUATOR,
    ]))
    runs = tmp_path / "runs"
    out = cli("run", str(tiny), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "evo",
              "--policy", "evolutionary", "--rounds", "2", "--parallel", "2", "--ray", "local", "--no-report",
              timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr
    run_dir = runs / "evo"
    # both rounds were chosen from the archive as it stood before either ran: the baseline is their parent
    archive = rows(run_dir, "SELECT round, status, parent, cell FROM evo_candidates ORDER BY round")
    base = rows(run_dir, "SELECT baseline_commit FROM run")[0][0]
    assert [(r, s, p) for r, s, p, _ in archive] == [(0, "passed", None), (1, "passed", base), (2, "passed", base)]
    assert archive[1][3] == archive[2][3] == " ".join(f"{k}={v}" for k, v in TECHNIQUES.items())
    # a benchmark never shared the machine with another gate of the run, though the rounds overlapped
    spans = []
    for gate, report in rows(run_dir, "SELECT gate, report FROM gates WHERE round > 0"):
        slot = json.loads(report)["slot"]
        spans.append((gate, slot["held_from"], slot["held_until"]))
    for gate, start, end in spans:
        if gate == "benchmark":
            assert not [o for o in spans if o[1:] != (start, end) and o[1] < end and start < o[2]]
    calls = rows(run_dir, "SELECT key, started FROM (SELECT key, finished_at - wall_s AS started FROM agent_calls "
                          "WHERE role = 'implementer') ORDER BY key")
    ends = rows(run_dir, "SELECT round, finished_at FROM rounds WHERE round > 0 ORDER BY round")
    assert calls[1][1] < ends[0][1]  # round 2's implementer started before round 1 finished
