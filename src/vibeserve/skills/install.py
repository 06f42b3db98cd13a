"""Copy chosen skills into an agent's worktree, where each harness discovers them.

Codex reads ``.agents/skills/<name>/SKILL.md`` and Claude Code ``.claude/skills/<name>/SKILL.md`` in the
project it works in; the built-in agent reads ``.agents/skills`` through its ``list_skills`` and
``load_skill`` tools. The run's git repository excludes both folders (``EXCLUDE_PATTERNS``, written to
``.git/info/exclude`` by the workspace), so installed skills never become part of a candidate.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from vibeserve.skills.catalog import Skill

INSTALL_DIRS = (".agents/skills", ".claude/skills")
EXCLUDE_PATTERNS = tuple(f"/{d}/" for d in INSTALL_DIRS)
_NOT_COPIED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def install_skills(skills: list[Skill], worktree: Path) -> list[Path]:
    """Replace the worktree's installed skills with ``skills``; return the folders written."""
    for rel in INSTALL_DIRS:
        dest = Path(worktree) / rel
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for skill in skills:
            shutil.copytree(skill.path, dest / skill.name, ignore=_NOT_COPIED)
    return installed_paths(worktree)


def installed_paths(worktree: Path) -> list[Path]:
    """The skill folders present in ``worktree`` (to mount read-only for the agent)."""
    return [Path(worktree) / rel for rel in INSTALL_DIRS if (Path(worktree) / rel).is_dir()]


def add_git_excludes(git_dir: Path) -> None:
    """Make git ignore installed skills in every worktree of the repository at ``git_dir``."""
    exclude = Path(git_dir) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    text = exclude.read_text() if exclude.exists() else ""
    missing = [p for p in EXCLUDE_PATTERNS if p not in text.splitlines()]
    if missing:
        sep = "" if not text or text.endswith("\n") else "\n"
        exclude.write_text(text + sep + "# skills installed for agents by vibeserve\n" + "".join(f"{p}\n" for p in missing))
