"""Which skills fit a target: its ``[hardware]``, ``[model].family`` and ``[workload].tags``.

A skill is chosen when it passes every rule below; each choice carries the reason, so
``vibeserve skills list --target DIR`` can say why a skill is in or out.

1. backend: the skill's ``backends`` holds the target's ``[hardware].backend``, or ``any``.
2. model family (model-layer skills only): the skill's ``families`` holds ``[model].family``; a target
   that names no family gets no model skill (applying another architecture's notes would mislead).
3. hardware: the skill's ``hardware`` is ``any``, or one of its words occurs in ``[hardware].summary``,
   or the summary names none of the hardware words the library knows (the target did not say, so
   nothing is ruled out).
4. workload: the skill's ``workloads`` is ``any`` (or absent), or shares a tag with ``[workload].tags``,
   or the target declares no tags (nothing is ruled out).
5. requirements: a chosen skill's ``requires`` are chosen too, whatever the rules above say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vibeserve.skills.catalog import ANY, LAYERS, Skill, load_library

if TYPE_CHECKING:
    from vibeserve.target.spec import TargetSpec


@dataclass(frozen=True)
class Choice:
    """One skill and whether it fits the target, with the reason in words."""

    skill: Skill
    selected: bool
    reason: str


def _words(text: str) -> set[str]:
    """Lowercase words of free text; ``x86_64``, ``h100`` and ``apple-silicon`` stay whole, and the parts
    of a hyphenated word count too."""
    words = set(re.findall(r"[a-z0-9][a-z0-9_.+-]*[a-z0-9+]|[a-z0-9]", text.lower()))
    return words | {part for w in words for part in w.split("-") if part}


def choose(spec: TargetSpec, skills: list[Skill]) -> list[Choice]:
    """Every skill with its verdict for ``spec``, in library order (layer, then name)."""
    backend = spec.hardware.backend
    family = spec.model.family.strip().lower()
    tags = {t.strip().lower() for t in spec.workload.tags if t.strip()}
    summary = _words(spec.hardware.summary)
    known_hardware = {w for s in skills for w in s.words("hardware") if w != ANY}
    named = summary & known_hardware

    verdicts: dict[str, Choice] = {}
    for skill in skills:
        verdicts[skill.name] = _judge(skill, backend, family, tags, summary, named)
    # Requirements follow their dependents, transitively.
    pending = [c.skill for c in verdicts.values() if c.selected]
    while pending:
        skill = pending.pop()
        for need in skill.words("requires"):
            current = verdicts.get(need)
            if current is not None and not current.selected:
                verdicts[need] = Choice(current.skill, True, f"required by {skill.name}")
                pending.append(current.skill)
    return sorted(verdicts.values(), key=lambda c: (LAYERS.index(c.skill.layer), c.skill.name))


def _judge(skill: Skill, backend: str, family: str, tags: set[str], summary: set[str],
           named: set[str]) -> Choice:
    backends = skill.words("backends")
    if ANY not in backends and backend not in backends:
        return Choice(skill, False, f"backend {backend} is not among its backends ({' '.join(backends)})")
    why = [f"backend {backend}" if backend in backends else "any backend"]
    if skill.layer == "models":
        families = skill.words("families")
        if not family:
            return Choice(skill, False, "the target names no [model].family")
        if family not in families:
            return Choice(skill, False, f"family {family!r} is not among its families")
        why.append(f"family {family}")
    hardware = skill.words("hardware")
    if ANY not in hardware:
        hits = sorted(set(hardware) & summary)
        if hits:
            why.append(f"hardware {' '.join(hits)}")
        elif named:
            return Choice(skill, False, f"[hardware].summary names {' '.join(sorted(named))}, not its hardware")
        else:
            why.append("hardware not named by the target")
    workloads = skill.words("workloads")
    if ANY not in workloads:
        hits = sorted(set(workloads) & tags)
        if hits:
            why.append(f"workload {' '.join(hits)}")
        elif tags:
            return Choice(skill, False, f"no workload tag of the target ({' '.join(sorted(tags))}) is among "
                                        f"its workloads ({' '.join(workloads)})")
        else:
            why.append("the target declares no workload tags")
    return Choice(skill, True, "; ".join(why))


def select_skills(spec: TargetSpec, extra_dirs: list[Path] | tuple[Path, ...] = ()) -> list[Skill]:
    """The skills (bundled plus ``extra_dirs``) that fit ``spec``, in library order."""
    return [c.skill for c in choose(spec, load_library(extra_dirs)) if c.selected]
