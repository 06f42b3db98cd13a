"""A toy target whose gates take milliseconds, for testing the loop and measuring its own overhead.

It is the ``vibeserve init`` scaffold: a stdlib HTTP server computing ``f(x) = x*x + 1`` whose benchmark
reports a ``score`` the server declares in ``score.txt``, a deterministic stand-in for a measured speed,
so tests of ranking, keeping and resuming do not depend on timing noise. A test fixture, not a model target.
"""

from __future__ import annotations

import json
from pathlib import Path

from vibeserve.target.scaffold import write_target


def make_toy_target(root: Path, rounds: int = 3, retries: int = 2, repeats: int = 2) -> Path:
    """Write the toy target under ``root`` and return its directory."""
    return write_target(root, name="toy", rounds=rounds, retries=retries, repeats=repeats)


def write_trajectory(root: Path, calls: list[dict]) -> Path:
    """Write a scripted trajectory (``trajectory.toml``) from a list of ``[[call]]`` tables."""
    def value(v: object) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)  # strings, numbers and booleans are the same in JSON and TOML

    root.mkdir(parents=True, exist_ok=True)
    lines = ["version = 1", 'description = "generated"', ""]
    for call in calls:
        lines.append("[[call]]")
        lines += [f"{k} = {value(v)}" for k, v in call.items()]
        lines.append("")
    (root / "trajectory.toml").write_text("\n".join(lines))
    return root
