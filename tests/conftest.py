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
