"""``vibeserve skills``: list the library (and what a target would get), show a skill, validate a folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The serving-systems skills library: list, show, validate.")
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

SkillDirs = Annotated[list[Path] | None, typer.Option(
    "--skills", metavar="DIR", help="A folder of your own skills, added to the bundled ones; repeatable.")]


@app.command("list")
def list_skills(
    target: Annotated[Path | None, typer.Option(
        metavar="DIR", help="A target directory: show which skills it gets and why.")] = None,
    skills: SkillDirs = None,
) -> None:
    """List every skill: name, layer, what it is for; with --target, what that target would get."""
    from vibeserve.skills.catalog import load_library

    library = load_library(skills or [])
    if target is None:
        table = Table(title=f"{len(library)} skills")
        for col in ("name", "layer", "description"):
            table.add_column(col)
        for s in library:
            table.add_row(s.name, s.layer, escape(s.summary))
        console.print(table)
        return
    from vibeserve.skills.selection import choose
    from vibeserve.target.spec import load_target

    spec = load_target(target).spec
    choices = choose(spec, library)
    picked = [c for c in choices if c.selected]
    table = Table(title=f"{spec.name}: {len(picked)} of {len(choices)} skills "
                        f"(backend {spec.hardware.backend}, family {spec.model.family or '-'}, "
                        f"tags {' '.join(spec.workload.tags) or '-'})")
    for col in ("", "name", "layer", "why"):
        table.add_column(col)
    for c in choices:
        table.add_row("+" if c.selected else "-", c.skill.name, c.skill.layer, escape(c.reason))
    console.print(table)


@app.command()
def show(
    name: str,
    file: Annotated[str | None, typer.Option(help="A file of the skill, e.g. references/notes.md.")] = None,
    skills: SkillDirs = None,
) -> None:
    """Print skill NAME's SKILL.md (or one of its files) and list its files."""
    from vibeserve.skills.catalog import SkillError, load_library

    library = {s.name: s for s in load_library(skills or [])}
    skill = library.get(name)
    if skill is None:
        import difflib

        close = difflib.get_close_matches(name, list(library), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SkillError([("skills", "", f"no skill named {name!r}{hint}; `vibeserve skills list` shows them")])
    if file is not None:
        path = (skill.path / file).resolve()
        if not path.is_relative_to(skill.path) or not path.is_file():
            raise SkillError([(str(skill.path), "", f"{file} is not a file of this skill")])
        sys.stdout.write(path.read_text(encoding="utf-8"))
        return
    sys.stdout.write(skill.file.read_text(encoding="utf-8"))
    files = sorted(str(p.relative_to(skill.path)) for p in skill.path.rglob("*")
                   if p.is_file() and p.name != "SKILL.md" and "__pycache__" not in p.parts)
    if files:
        sys.stdout.write("\nfiles: " + ", ".join(files) + "\n")


@app.command()
def validate(directory: Path) -> None:
    """Check a folder of your own skills the same way the bundled ones are checked."""
    from vibeserve.skills.catalog import load_library, load_skills

    own = load_skills(directory, origin=str(directory))
    load_library([directory])  # cross-references against the bundled skills
    console.print(f"[green]{len(own)} skill{'s' if len(own) != 1 else ''} in {directory} "
                  f"{'are' if len(own) != 1 else 'is'} valid[/green]: {', '.join(s.name for s in own)}")
