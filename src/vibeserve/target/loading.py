"""Loading a target: ``target.toml`` parsed into a ``TargetSpec`` and checked, every problem reported at once
(schema, placeholders, objectives, paths, the programs its commands run), each naming file and key."""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from vibeserve.errors import TargetError
from vibeserve.target.search_space import space_problems
from vibeserve.target.spec import ALLOWED, PLACEHOLDER, TARGET_FILE, Target, TargetSpec


def _loc(err: dict) -> str:
    return ".".join(str(p) for p in err["loc"])


def _explain(err: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling against the target contract, docs/targets.md)"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"{err['msg'].lower()} (got {err.get('input')!r})"
    return f"{err['msg']} (got {err.get('input')!r})"


def _unknown(key: str, known: list[str], table: bool) -> str:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1, cutoff=0.6)
    what = f"unknown table [{key}]" if table else "unknown key"
    hint = f" (did you mean {f'[{close[0]}]' if table else repr(close[0])}?)" if close else ""
    return f"{what}{hint}; see docs/targets.md for every key"


def _schema_problems(data: dict[str, Any], error: ValidationError) -> list[tuple[str, str]]:
    """Every schema problem at once: unknown tables and keys first (with a likely spelling), then the rest."""
    problems: list[tuple[str, str]] = []
    for err in error.errors():
        loc = _loc(err)
        if err["type"] == "extra_forbidden":
            parent = TargetSpec
            for part in err["loc"][:-1]:
                if isinstance(part, int):
                    continue  # an index into a list of tables: the table's model is already in hand
                field = parent.model_fields.get(str(part))
                ann = getattr(field, "annotation", None) if field else None
                parent = next((a for a in (ann, *getattr(ann, "__args__", ())) if isinstance(a, type)
                               and issubclass(a, BaseModel)), None)  # type: ignore[assignment]
                if parent is None:
                    break
            known = list(parent.model_fields) if parent is not None else []
            table = len(err["loc"]) == 1 and isinstance(data.get(str(err["loc"][0])), dict)
            problems.insert(sum(p[1].startswith("unknown") for p in problems), (loc, _unknown(loc, known, table)))
        elif err["type"] == "missing" and len(err["loc"]) == 1 and _is_section(str(err["loc"][0])):
            problems.append((loc, f"required table [{loc}] is missing"))
        else:
            problems.append((loc, _explain(err)))
    return problems


def _is_section(name: str) -> bool:
    ann = TargetSpec.model_fields[name].annotation if name in TargetSpec.model_fields else None
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _placeholder_problems(spec: TargetSpec) -> list[tuple[str, str]]:
    commands: dict[str, list[str]] = {
        "reference.command": spec.reference.command,
        "deliverable.start": spec.deliverable.start,
        "deliverable.ready_url": [spec.deliverable.ready_url],
        "accuracy.command": spec.accuracy.command,
        "benchmark.command": spec.benchmark.command,
    }
    if spec.setup:
        commands["setup.command"] = spec.setup.command
    if spec.probes.command:
        commands["probes.command"] = spec.probes.command
    if spec.comparator.command:
        commands["comparator.command"] = spec.comparator.command
    problems = []
    for key, argv in commands.items():
        allowed = ALLOWED[key.removesuffix(".command")]
        for arg in argv:
            for name in PLACEHOLDER.findall(arg):
                head, _, tail = name.partition(".")
                if head == "artifacts" and tail:
                    if tail not in spec.artifacts:
                        problems.append((key, f"placeholder {{{name}}} names no entry of [artifacts] "
                                              f"(entries: {', '.join(spec.artifacts) or 'none'})"))
                    continue
                if name not in allowed:
                    problems.append((key, f"unknown placeholder {{{name}}}; allowed here: {', '.join(sorted(allowed))}"))
    if spec.probes.kind == "command" and not spec.probes.command:
        problems.append(("probes.command", 'kind = "command" needs a command'))
    return problems + spec.comparator.problems()


def load(root: Path | str) -> Target:
    """Parse and check ``root/target.toml``: schema, placeholders and that every named path exists.

    Every problem found is reported in one ``TargetError``, so a user fixes them all in one go.
    """
    root = Path(root)
    file = root / TARGET_FILE
    if not root.is_dir():
        raise TargetError(str(root), "", "is not a directory holding a target (expected target.toml inside)")
    if not file.is_file():
        raise TargetError(str(file), "", "not found; create one with `vibeserve init DIR`")
    try:
        data = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TargetError(str(file), "", f"malformed TOML: {e}") from e
    try:
        spec = TargetSpec.model_validate(data)
    except ValidationError as e:
        problems = _schema_problems(data, e)
        raise TargetError(str(file), *problems[0], more=problems[1:]) from None
    target = Target(root, spec)
    problems = _placeholder_problems(spec) + _objective_problems(spec) + _path_problems(target)
    problems += space_problems(spec.baseline, spec.artifacts) if spec.baseline else []
    if problems:
        raise TargetError(str(file), *problems[0], more=problems[1:])
    return target


def _objective_problems(spec: TargetSpec) -> list[tuple[str, str]]:
    """Each objective names its own report field, once, and not the primary metric again."""
    problems, seen = [], {spec.benchmark.metric}
    for i, o in enumerate(spec.benchmark.objectives):
        if o.metric in seen:
            what = "the primary [benchmark].metric" if o.metric == spec.benchmark.metric else "an earlier objective"
            problems.append((f"benchmark.objectives.{i}.metric", f"{o.metric!r} is already {what}; each objective "
                             "needs its own report field"))
        seen.add(o.metric)
    if spec.benchmark.paired and spec.benchmark.objectives:
        problems.append(("benchmark.paired", "paired measurement judges the primary metric only; set it false or "
                         "remove [[benchmark.objectives]]"))
    if spec.benchmark.paired and spec.benchmark.repeats < 2:
        problems.append(("benchmark.repeats", "paired = true needs at least 2 repeats (pairs) for an interval"))
    return problems


def _requests_file_problem(path: Path, rel: str) -> str:
    """Why a ``[probes].requests`` file is unusable ("" when it is fine): JSONL of chat requests."""
    if not path.is_file():
        return f"file {rel!r} does not exist"
    n_rows = 0
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
            return f'{rel}:{n}: expected a JSON object with a non-empty "messages" list'
        n_rows += 1
    return "" if n_rows else f"file {rel!r} holds no requests"


def _path_problems(target: Target) -> list[tuple[str, str]]:
    spec, problems = target.spec, []
    if not target.path(spec.instructions).is_file():
        problems.append(("instructions", f"file {spec.instructions!r} does not exist"))
    if spec.probes.requests:
        problem = _requests_file_problem(target.path(spec.probes.requests), spec.probes.requests)
        if problem:
            problems.append(("probes.requests", problem))
    if spec.reference.sample_input and not target.path(spec.reference.sample_input).is_file():
        problems.append(("reference.sample_input", f"file {spec.reference.sample_input!r} does not exist"))
    if spec.seed and not target.path(spec.seed).is_dir():
        problems.append(("seed", f"directory {spec.seed!r} does not exist"))
    if not spec.setup:
        for name, rel in spec.artifacts.items():
            if not target.path(rel).exists():
                problems.append((f"artifacts.{name}", f"path {rel!r} does not exist (and there is no [setup] to build it)"))
    for key, argv in (("reference.command", spec.reference.command), ("accuracy.command", spec.accuracy.command),
                      ("benchmark.command", spec.benchmark.command), ("comparator.command", spec.comparator.command)):
        if argv and (problem := _script_problem(target, argv)) is not None:
            problems.append((key, problem))
    return problems


def _script_problem(target: Target, argv: list[str]) -> str | None:
    """A command's program, or the script a ``python`` runs, must exist (and be executable if run directly)."""
    import os
    import shutil

    prog = argv[0]
    if prog in ("python", "python3", "{python}"):
        script = argv[1] if len(argv) > 1 and not argv[1].startswith("-") and "{" not in argv[1] else None
        if script is not None and not target.path(script).is_file():
            return f"script {script!r} does not exist in the target"
        return None
    if "/" in prog and "{" not in prog:
        path = target.path(prog)
        if not path.is_file():
            return f"program {prog!r} does not exist in the target"
        if not os.access(path, os.X_OK):
            return f"program {prog!r} is not executable (chmod +x {prog})"
    elif "{" not in prog and shutil.which(prog) is None:
        return f"program {prog!r} is not on PATH"
    return None
