"""``list_skills`` and ``load_skill``: the built-in agent's view of the skills installed in its worktree.

Names and descriptions come first (``list_skills``); the body of a SKILL.md loads on use
(``load_skill(name)``), and a reference or script on demand (``load_skill(name, file=...)``). The same
progressive disclosure the CLI agents give their own skills.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vibeserve.skills.catalog import SKILL_FILE, split_front_matter
from vibeserve.skills.install import INSTALL_DIRS

SKILLS_DIR = INSTALL_DIRS[0]  # .agents/skills

SKILL_TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "list_skills",
        "description": "List the serving-systems skills available to you: name, layer and what each is for. "
                       "Load one with load_skill when it fits your task.",
        "parameters": {"type": "object", "properties": {}, "required": []}}},
    {"type": "function", "function": {
        "name": "load_skill",
        "description": "Read a skill's instructions (its SKILL.md body and the files it ships), or one of "
                       "its files with `file` (e.g. references/notes.md or scripts/example.py).",
        "parameters": {"type": "object", "properties": {
            "name": {"type": "string", "description": "a name from list_skills"},
            "file": {"type": "string", "description": "a path inside the skill folder (optional)"}},
            "required": ["name"]}}},
]
TOOL_NAMES = {t["function"]["name"] for t in SKILL_TOOLS}


def skill_tools(workdir: Path) -> list[dict[str, Any]]:
    """The two tools when skills are installed in ``workdir``, else none."""
    return SKILL_TOOLS if _installed(workdir) else []


def _installed(workdir: Path) -> dict[str, Path]:
    root = Path(workdir) / SKILLS_DIR
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / SKILL_FILE).is_file()}


def run_skill_tool(name: str, args: dict[str, Any], workdir: Path) -> tuple[str, bool]:
    """Answer one tool call: ``(output, is_error)``."""
    skills = _installed(workdir)
    if name == "list_skills":
        lines = []
        for skill_name, folder in skills.items():
            meta = _front_matter(folder)
            layer = (meta.get("metadata") or {}).get("layer", "")
            lines.append(f"- {skill_name} ({layer}): {' '.join(str(meta.get('description', '')).split())}")
        return ("\n".join(lines) or "no skills are installed"), False
    wanted = str(args.get("name") or "")
    folder = skills.get(wanted)
    if folder is None:
        return f"no skill named {wanted!r}; list_skills shows the installed ones", True
    rel = args.get("file")
    if not rel:
        parts = split_front_matter((folder / SKILL_FILE).read_text(encoding="utf-8"))
        body = parts[1] if parts else ""
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                       if p.is_file() and p.name != SKILL_FILE and "__pycache__" not in p.parts)
        listing = "\n".join(f"- {f}" for f in files)
        return body.strip() + (f"\n\nFiles in this skill (load with file=...):\n{listing}" if files else ""), False
    path = (folder / str(rel)).resolve()
    if not path.is_relative_to(folder.resolve()) or not path.is_file():
        return f"{rel} is not a file of skill {wanted}", True
    return path.read_text(encoding="utf-8", errors="replace"), False


def _front_matter(folder: Path) -> dict[str, Any]:
    parts = split_front_matter((folder / SKILL_FILE).read_text(encoding="utf-8"))
    try:
        data = yaml.safe_load(parts[0]) if parts else {}
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}
