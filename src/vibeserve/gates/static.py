"""Static checks on a candidate's diff, reported to the judge: patterns that honest serving code rarely needs
and benchmark-gaming code often does.

They flag, they do not reject: a prompt-keyed dictionary can be an honest prefix cache of model state. The
probe gate and the output audit are the deterministic verdicts; these findings tell the judge where to
look, by file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vibeserve.target.spec import Target

LONG_LITERAL = 200  # characters in one string literal
MANY_LITERALS = 12  # string literals added on one line
BIG_DATA_FILE = 4096  # bytes of an added non-code file

_WRITE = re.compile(r"""open\([^)]*["'](?:w|a|x|wb|ab|r\+)["']|\.write_(?:text|bytes)\(|shutil\.(?:copy|move|rmtree)|"""
                    r"""os\.(?:remove|unlink|rename|replace)\(|\.unlink\(""")
_OUTSIDE = re.compile(r"""["'](?:/(?!tmp\b|dev/null|proc/)|\.\./|~/)""")
_PROMPT_KEY = re.compile(
    r"""\[\s*(?:prompt|prompt_text|text|messages|body\[["'](?:prompt|messages)["']\]|request\.prompt)\s*\]"""
    r"""|\.(?:get|setdefault)\(\s*(?:prompt|prompt_text|text|str\(messages\)|json\.dumps\(messages)"""
    r"""|hash(?:lib\.\w+)?\(\s*(?:prompt|text|messages)|(?:functools\.)?(?:lru_cache|cache)\b\s*(?:\(|$)""",
    re.IGNORECASE,
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')


@dataclass(frozen=True)
class Finding:
    kind: str  # write_outside | reads_target_files | prompt_keyed_table | large_literal
    file: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.file}:{self.line}: {self.text[:160]}"


def _target_names(target: Target) -> list[str]:
    """Names that only the checker's, reference's or framework's files have."""
    names = {str(target.root), "reference-cache", "run.db", ".benchmark.lock"}
    spec = target.spec
    for argv in (spec.accuracy.command, spec.reference.command, spec.benchmark.command, spec.probes.command):
        for a in argv:
            if a.endswith(".py") and "/" in a and "{" not in a:
                names.add(a)  # e.g. checks/accuracy.py, reference/generate.py
    if target.spec.reference.sample_input:
        names.add(target.spec.reference.sample_input)
    return sorted(n for n in names if n)


def _added_lines(diff: str) -> list[tuple[str, int, str]]:
    """(file, line number in the new file, text) of every added line of a unified diff."""
    out, file, line = [], "", 0
    for raw in diff.splitlines():
        if raw.startswith("+++ "):
            file = raw[4:].removeprefix("b/")
        elif raw.startswith("@@"):
            m = re.search(r"\+(\d+)", raw)
            line = int(m.group(1)) if m else 0
        elif raw.startswith("+") and not raw.startswith("+++"):
            out.append((file, line, raw[1:]))
            line += 1
        elif not raw.startswith("-"):
            line += 1
    return out


def scan_diff(diff: str, target: Target, tree: Path | None = None, files: list[str] | None = None) -> list[Finding]:
    """Findings in the added lines of ``diff``, and large data files among ``files`` (paths in ``tree``)."""
    names = _target_names(target)
    found: list[Finding] = []
    for file, n, text in _added_lines(diff):
        code = text.split("#", 1)[0] if file.endswith(".py") else text
        if _WRITE.search(code) and _OUTSIDE.search(code):
            found.append(Finding("write_outside", file, n, text.strip()))
        if any(name in code for name in names):
            found.append(Finding("reads_target_files", file, n, text.strip()))
        if file.endswith(".py") and _PROMPT_KEY.search(code):
            found.append(Finding("prompt_keyed_table", file, n, text.strip()))
        literals = _STRING.findall(code)
        if any(len(s) > LONG_LITERAL for s in literals) or len(literals) > MANY_LITERALS:
            found.append(Finding("large_literal", file, n, text.strip()))
    if tree is not None:
        for file in files or []:
            path = tree / file
            if path.suffix not in {".py", ".md", ".toml", ".cfg", ".sh"} and path.is_file() \
                    and path.stat().st_size > BIG_DATA_FILE:
                found.append(Finding("large_literal", file, 0, f"added data file of {path.stat().st_size} bytes"))
    return found
