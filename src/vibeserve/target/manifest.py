"""A manifest of the target's read-only files, so a run can tell when they change under it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from vibeserve.target.spec import Target

SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", "runs"}


def _files(target: Target) -> list[Path]:
    seed = target.seed_dir
    out = []
    for p in sorted(target.root.rglob("*")):
        rel = p.relative_to(target.root)
        if any(part in SKIP_DIRS for part in rel.parts) or not p.is_file():
            continue
        if seed is not None and p.resolve().is_relative_to(seed):
            continue  # the seed is the agents' starting point, not a fixed artifact
        out.append(p)
    return out


def build_manifest(target: Target) -> dict[str, str]:
    """``{relative path: sha256}`` of every file of the target except the seed deliverable."""
    manifest = {}
    for p in _files(target):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        manifest[str(p.relative_to(target.root))] = h.hexdigest()
    return manifest


def fingerprint(target: Target) -> dict[str, list[int]]:
    """A cheap stand-in checked before every round: size and mtime of each manifest file."""
    return {str(p.relative_to(target.root)): [p.stat().st_size, p.stat().st_mtime_ns] for p in _files(target)}


def diff_manifest(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Human-readable differences: changed, added and removed files."""
    changes = [f"changed: {k}" for k in sorted(old.keys() & new.keys()) if old[k] != new[k]]
    changes += [f"added: {k}" for k in sorted(new.keys() - old.keys())]
    changes += [f"removed: {k}" for k in sorted(old.keys() - new.keys())]
    return changes
