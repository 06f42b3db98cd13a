"""Skills on disk: parse ``SKILL.md`` (Agent Skills format), validate every field, load whole folders.

A problem names the file and the field, and every problem found in one pass is reported at once, so a
user fixes their skills folder in one go. Cross-skill rules (``requires`` and ``conflicts`` name known
skills, a conflict is declared on both sides and explained in both bodies) are checked by
``check_library`` over the bundled skills plus the user's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vibeserve.errors import VibeserveError

SKILL_FILE = "SKILL.md"
LAYERS = ("models", "algorithms", "frameworks", "backends", "hardware", "engines", "tooling")
BACKENDS = ("cpu", "cuda", "rocm", "metal")
ANY = "any"
# Space-separated lists every skill declares; ``any`` is allowed in backends, hardware and workloads.
REQUIRED_METADATA = ("layer", "backends", "hardware", "requires", "conflicts")
# Optional lists: model families a model skill covers, workload tags a skill serves (absent = any).
OPTIONAL_LISTS = ("families", "workloads")
FRONT_MATTER_KEYS = ("name", "description", "license", "compatibility", "metadata", "allowed-tools")
NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
MAX_NAME, MAX_DESCRIPTION, MAX_COMPATIBILITY, MAX_BODY_LINES = 64, 1024, 500, 500
# Paths a body points at; each must exist in the skill folder.
FILE_REFERENCE = re.compile(r"(?<![\w/.-])((?:references|scripts)/[\w./-]*\w)")


class SkillError(VibeserveError):
    """One or more skills are malformed; each problem names its file and field."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        if len(problems) == 1:
            file, key, problem = problems[0]
            super().__init__(f"{file}: {key}: {problem}" if key else f"{file}: {problem}")
        else:
            lines = "\n".join(f"  {f}: {k or '(file)'}: {p}" for f, k, p in problems)
            super().__init__(f"{len(problems)} problems in skills:\n{lines}")


@dataclass(frozen=True)
class Skill:
    """A validated skill: its front matter, its body and the folder it lives in."""

    name: str
    description: str
    path: Path
    metadata: dict[str, str]
    body: str
    compatibility: str = ""
    origin: str = "bundled"  # or the user folder it came from
    extra: dict[str, str] = field(default_factory=dict)  # license, allowed-tools

    @property
    def layer(self) -> str:
        return self.metadata["layer"]

    @property
    def file(self) -> Path:
        return self.path / SKILL_FILE

    def words(self, key: str) -> list[str]:
        """A metadata list as words; an absent optional list is ``["any"]``."""
        default = ANY if key in OPTIONAL_LISTS else ""
        return self.metadata.get(key, default).split()

    @property
    def summary(self) -> str:
        """The description's first sentence, for listings."""
        first = self.description.strip().split(". ")[0].rstrip(".")
        return first + "."


def bundled_root() -> Path:
    """The folder of the skills that ship with vibeserve (this package)."""
    return Path(__file__).resolve().parent


def split_front_matter(text: str) -> tuple[str, str] | None:
    """``(front matter, body)`` of a SKILL.md, or None when it does not open with a ``---`` block."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return None
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "".join(lines[1:i]), "".join(lines[i + 1:])
    return None


def parse_skill(folder: Path, origin: str = "bundled") -> tuple[Skill | None, list[tuple[str, str, str]]]:
    """Read ``folder/SKILL.md``; return the skill (None if unusable) and every problem found."""
    file = folder / SKILL_FILE
    where = str(file)
    problems: list[tuple[str, str, str]] = []

    def bad(key: str, problem: str) -> None:
        problems.append((where, key, problem))

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        bad("", f"cannot be read: {e}")
        return None, problems
    parts = split_front_matter(text)
    if parts is None:
        bad("", "must open with YAML front matter between two '---' lines")
        return None, problems
    try:
        data = yaml.safe_load(parts[0])
    except yaml.YAMLError as e:
        bad("", f"front matter is not valid YAML: {e}")
        return None, problems
    if not isinstance(data, dict):
        bad("", "front matter must be a mapping of keys to values")
        return None, problems
    body = parts[1]

    for key in data:
        if key not in FRONT_MATTER_KEYS:
            bad(str(key), f"unknown key; the Agent Skills format allows {', '.join(FRONT_MATTER_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        bad("name", "required; lowercase letters, digits and single hyphens")
        name = folder.name
    else:
        if len(name) > MAX_NAME:
            bad("name", f"is {len(name)} characters; at most {MAX_NAME}")
        if not NAME.match(name):
            bad("name", f"{name!r} must be lowercase letters, digits and single hyphens, not starting or "
                        "ending with a hyphen")
        if name != folder.name:
            bad("name", f"{name!r} must equal the folder name {folder.name!r}")
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        bad("description", "required; say what the skill is for and when to use it")
        description = ""
    elif len(description) > MAX_DESCRIPTION:
        bad("description", f"is {len(description)} characters; at most {MAX_DESCRIPTION}")
    compatibility = data.get("compatibility", "")
    if not isinstance(compatibility, str):
        bad("compatibility", "must be a string")
        compatibility = ""
    elif len(compatibility) > MAX_COMPATIBILITY:
        bad("compatibility", f"is {len(compatibility)} characters; at most {MAX_COMPATIBILITY}")
    metadata = _check_metadata(data.get("metadata"), folder, bad)
    _check_body(body, folder, bad)
    extra = {k: str(data[k]) for k in ("license", "allowed-tools") if k in data}
    if problems:
        return None, problems
    return Skill(name=name, description=description.strip(), path=folder.resolve(), metadata=metadata,
                 body=body, compatibility=compatibility.strip(), origin=origin, extra=extra), problems


def _check_metadata(meta: object, folder: Path, bad) -> dict[str, str]:
    if not isinstance(meta, dict):
        bad("metadata", f"required: a map of strings with at least {', '.join(REQUIRED_METADATA)}")
        return {}
    out: dict[str, str] = {}
    for key, value in meta.items():
        if not isinstance(value, str):
            bad(f"metadata.{key}", f"must be a string (a space-separated list), got {type(value).__name__}")
            continue
        out[str(key)] = value
    for key in REQUIRED_METADATA:
        if key not in meta:
            bad(f"metadata.{key}", "required (write an empty string for an empty list)")
    layer = out.get("layer")
    if layer is not None:
        if layer not in LAYERS:
            bad("metadata.layer", f"{layer!r} is not a layer; use one of {', '.join(LAYERS)}")
        elif folder.parent.name in LAYERS and folder.parent.name != layer:
            bad("metadata.layer", f"{layer!r} but the skill lives in the {folder.parent.name!r} folder")
    backends = out.get("backends", "").split()
    if "backends" in out and not backends:
        bad("metadata.backends", f"must name at least one of {', '.join(BACKENDS)} or 'any'")
    for word in backends:
        if word not in (*BACKENDS, ANY):
            bad("metadata.backends", f"{word!r} is not a backend; use {', '.join(BACKENDS)} or 'any'")
    if "hardware" in out and not out["hardware"].split():
        bad("metadata.hardware", "must name hardware words (matched against [hardware].summary) or 'any'")
    for key in ("requires", "conflicts"):
        for word in out.get(key, "").split():
            if not NAME.match(word):
                bad(f"metadata.{key}", f"{word!r} is not a skill name")
    if layer == "models" and not out.get("families", "").split():
        bad("metadata.families", "a model skill must list the model families it covers")
    return out


def _check_body(body: str, folder: Path, bad) -> None:
    if not body.strip():
        bad("body", "is empty; say how to use the skill (details go in references/)")
        return
    lines = body.count("\n") + 1
    if lines > MAX_BODY_LINES:
        bad("body", f"is {lines} lines; keep it under {MAX_BODY_LINES} and move details to references/")
    for ref in sorted(set(FILE_REFERENCE.findall(body))):
        if not (folder / ref).exists():
            bad("body", f"points at {ref}, which does not exist in the skill folder")


def skill_folders(root: Path) -> list[Path]:
    """Every folder under ``root`` (or ``root`` itself) holding a SKILL.md, skipping hidden and cache dirs."""
    if (root / SKILL_FILE).is_file():
        return [root]
    found = []
    for file in sorted(root.rglob(SKILL_FILE)):
        rel = file.relative_to(root).parts
        if any(p.startswith(".") or p == "__pycache__" for p in rel[:-1]):
            continue
        found.append(file.parent)
    return found


def load_skills(root: Path, origin: str = "bundled") -> list[Skill]:
    """Load and validate every skill under ``root``; one ``SkillError`` lists every problem."""
    root = Path(root)
    if not root.is_dir():
        raise SkillError([(str(root), "", "is not a directory of skills")])
    folders = skill_folders(root)
    if not folders:
        raise SkillError([(str(root), "", f"holds no skill (a folder with a {SKILL_FILE})")])
    skills, problems = [], []
    for folder in folders:
        skill, found = parse_skill(folder, origin)
        problems += found
        if skill is not None:
            skills.append(skill)
    seen: dict[str, Skill] = {}
    for skill in skills:
        if skill.name in seen:
            problems.append((str(skill.file), "name", f"{skill.name!r} is also the name of {seen[skill.name].file}"))
        seen[skill.name] = skill
    if problems:
        raise SkillError(problems)
    return skills


def check_library(skills: list[Skill]) -> None:
    """Cross-skill rules: ``requires``/``conflicts`` name known skills; a conflict is mutual and explained."""
    by_name = {s.name: s for s in skills}
    problems = []
    for s in skills:
        for key in ("requires", "conflicts"):
            for other in s.words(key):
                if other not in by_name:
                    problems.append((str(s.file), f"metadata.{key}", f"names {other!r}, which is no known skill"))
        for other in s.words("conflicts"):
            peer = by_name.get(other)
            if peer is None:
                continue
            if s.name not in peer.words("conflicts"):
                problems.append((str(s.file), "metadata.conflicts",
                                 f"names {other!r}, but {other} does not name {s.name!r} back"))
            if not _explains(s.body, other):
                problems.append((str(s.file), "body", f"conflicts with {other!r}: its '## Compatibility' "
                                                      f"section must name {other} and say which wins when"))
    if problems:
        raise SkillError(problems)


def _explains(body: str, other: str) -> bool:
    match = re.search(r"^## Compatibility\s*$(.*?)(?=^## |\Z)", body, flags=re.M | re.S)
    return bool(match and other in match.group(1))


def load_library(extra_dirs: list[Path] | tuple[Path, ...] = ()) -> list[Skill]:
    """The bundled skills plus each user folder; a user's skill replaces a bundled one of the same name."""
    skills = {s.name: s for s in load_skills(bundled_root())}
    for d in extra_dirs:
        for s in load_skills(Path(d), origin=str(d)):
            skills[s.name] = s
    merged = list(skills.values())
    check_library(merged)
    return sorted(merged, key=lambda s: (LAYERS.index(s.layer), s.name))
