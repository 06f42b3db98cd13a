"""Every patch of a scripted trajectory applies to every tree its round can start from.

A round starts from the commit its orchestrator's ``pick_next`` names: ``baseline`` (the seed), ``round-N``
(round N's candidate, kept or only accepted) or ``best`` (the seed, or any earlier round's candidate,
depending on which rounds the benchmark kept). Each attempt after a round's first starts from the attempt
before it (that candidate was committed, and the gates rejected it), so a round's candidate is its last
attempt's tree. This replays every trajectory's patches in that order against each possible start tree with
``git apply --check``: a patch that only applies when some earlier round was kept fails here, in seconds,
instead of half an hour into the demo.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from vibeserve.harness.scripted import ScriptedHarness

REPO = Path(__file__).resolve().parents[1]
TRAJECTORIES = REPO / "examples" / "trajectories"
ROUND = re.compile(r"r(\d{3})/orchestrator")
ATTEMPT = re.compile(r"r(\d{3})/a(\d+)/implementer")
PICK = re.compile(r"round[-_ ]?(\d+)", re.IGNORECASE)

Tree = tuple[str, ...]  # the patches applied to the seed, in order


def rounds_of(trajectory: Path) -> dict[int, tuple[str, list[str]]]:
    """``{round: (start_commit its orchestrator picks, [patch of attempt 1, 2, ...])}``."""
    harness = ScriptedHarness(trajectory)
    harness.check()
    starts: dict[int, str] = {}
    attempts: dict[int, dict[int, str]] = {}
    for step in harness._trajectory.call:
        if m := ROUND.fullmatch(step.key):
            picks = [c.arguments for c in step.mcp if c.tool == "pick_next"]
            starts[int(m.group(1))] = str(picks[-1].get("start_commit", "best")) if picks else "best"
        elif (m := ATTEMPT.fullmatch(step.key)) and step.patch:
            attempts.setdefault(int(m.group(1)), {})[int(m.group(2))] = step.patch
    return {n: (starts.get(n, "best"), [p for _, p in sorted(attempts.get(n, {}).items())])
            for n in sorted(set(starts) | set(attempts))}


def start_trees(rounds: dict[int, tuple[str, list[str]]]) -> dict[int, set[Tree]]:
    """For each round, the trees it can start from, whichever earlier rounds were kept."""
    candidates: dict[int, set[Tree]] = {}
    starts: dict[int, set[Tree]] = {}
    for n, (start, patches) in rounds.items():
        if start == "baseline":
            bases = {()}
        elif start == "best":  # the seed until a round is kept, then the last kept round's candidate
            bases = {(), *(t for k in candidates if k < n for t in candidates[k])}
        elif (m := PICK.fullmatch(start)) and int(m.group(1)) in candidates and int(m.group(1)) < n:
            bases = candidates[int(m.group(1))]
        else:
            raise AssertionError(f"round {n} starts from {start!r}, which names no earlier round with a patch")
        starts[n] = bases
        candidates[n] = {base + tuple(patches) for base in bases} if patches else set(bases)
    return starts


def seed_of(trajectory: Path) -> Path:
    kit = REPO / "examples" / "targets" / trajectory.name
    return kit / tomllib.loads((kit / "target.toml").read_text())["seed"]


def trajectories() -> list[Path]:
    return sorted(p.parent for p in TRAJECTORIES.glob("*/trajectory.toml"))


def check_patches(trajectory: Path, seed: Path, tmp_path: Path) -> int:
    """Applies every round's patches to every tree it can start from (each checked first); returns how many
    (start tree, attempt) pairs were checked. An AssertionError names the patch and the tree it misses."""
    rounds = rounds_of(trajectory)
    assert rounds, f"{trajectory}: no rounds scripted"
    built: dict[Tree, Path] = {}

    def tree(patches: Tree) -> Path:
        """The seed with ``patches`` applied in order."""
        if patches not in built:
            parent = tree(patches[:-1]) if patches else seed
            dest = tmp_path / f"t{len(built)}"
            shutil.copytree(parent, dest, ignore=shutil.ignore_patterns("__pycache__", "artifacts"))
            if patches:
                patch = trajectory / patches[-1]
                done = subprocess.run(["git", "apply", "--check", str(patch)], cwd=dest, capture_output=True, text=True)
                assert done.returncode == 0, (
                    f"{patch.name} does not apply on top of {' + '.join(('seed',) + patches[:-1])}: {done.stderr.strip()}")
                subprocess.run(["git", "apply", str(patch)], cwd=dest, check=True, capture_output=True)
            built[patches] = dest
        return built[patches]

    checked = 0
    for n, bases in start_trees(rounds).items():
        for base in sorted(bases):
            for i in range(1, len(rounds[n][1]) + 1):  # attempt i starts from the attempt before it
                tree(base + tuple(rounds[n][1][:i]))
                checked += 1
    return checked


@pytest.mark.parametrize("trajectory", trajectories(), ids=lambda p: p.name)
def test_every_patch_applies_to_every_tree_its_round_can_start_from(trajectory: Path, tmp_path: Path) -> None:
    assert check_patches(trajectory, seed_of(trajectory), tmp_path) >= 1


TOY = """version = 1
[[call]]
key = "r001/orchestrator"
mcp = [{{ tool = "pick_next", arguments = {{ issue_id = 1, start_commit = "best" }} }}]
reply = {{ summary = "one" }}
[[call]]
key = "r001/a1/implementer"
patch = "p1.patch"
reply = {{ summary = "one" }}
[[call]]
key = "r002/orchestrator"
mcp = [{{ tool = "pick_next", arguments = {{ issue_id = 1, start_commit = "{start}" }} }}]
reply = {{ summary = "two" }}
[[call]]
key = "r002/a1/implementer"
patch = "p2.patch"
reply = {{ summary = "two" }}
"""


def test_a_patch_that_needs_a_kept_round_is_caught(tmp_path: Path) -> None:
    """A second round starting from ``best`` with a patch made on top of round 1's candidate fails (``best``
    is still the seed when round 1 was not kept); starting from ``round-1`` it passes."""
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "a.txt").write_text("one\n")
    traj = tmp_path / "traj"
    traj.mkdir()
    (traj / "p1.patch").write_text("--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-one\n+two\n")
    (traj / "p2.patch").write_text("--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-two\n+three\n")
    (traj / "trajectory.toml").write_text(TOY.format(start="best"))
    with pytest.raises(AssertionError, match=r"p2.patch does not apply on top of seed:"):
        check_patches(traj, seed, tmp_path / "best")
    (traj / "trajectory.toml").write_text(TOY.format(start="round-1"))
    assert check_patches(traj, seed, tmp_path / "pinned") == 2
    assert start_trees({1: ("best", ["a", "b"]), 2: ("round-1", ["c"])})[2] == {("a", "b")}
    with pytest.raises(AssertionError, match="names no earlier round"):
        start_trees({1: ("round-2", ["p1"]), 2: ("best", ["p2"])})
