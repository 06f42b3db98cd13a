"""Shared fixtures: a toy target, a CLI runner, and a trajectory writer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from vibeserve.testing.toy_target import make_toy_target, write_trajectory  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    return make_toy_target(tmp_path / "toy")


def cli(*args: str, cwd: Path | None = None, timeout: float = 300, check: bool | None = None) -> subprocess.CompletedProcess:
    """Run the real ``vibeserve`` CLI in a subprocess."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "vibeserve", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    if check is True:
        assert proc.returncode == 0, f"vibeserve {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def trajectory(tmp_path: Path):
    def make(calls: list[dict], name: str = "traj") -> Path:
        return write_trajectory(tmp_path / name, calls)

    return make


# The longest test files go first: with two workers taking a file each at a time, a long file started last
# would run alone at the end while the other worker idles.
# (scripts/test.sh keeps this order: --no-loadscope-reorder.) Measured on 2 cores, quiet, in CI.
LONGEST_FIRST = ("test_corpus.py", "test_smollm2_target.py", "test_demo.py", "test_policies_tiny_llama.py",
                 "test_init_templates.py", "test_kit_json.py", "test_kit_code_edit.py", "test_kit_hybrid_prefix.py",
                 "test_lifecycle.py", "test_harness_agents.py", "test_loop.py", "test_resume.py", "test_parallel.py",
                 "test_parallel_resume.py", "test_tiny_llama_target.py", "test_profile.py", "test_steer.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
