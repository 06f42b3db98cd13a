"""``memory.md`` as a policy's only carried state: notes an agent rewrites, and a round log the policy appends.

The file has two parts. Above the log heading: free notes, replaced whole by the agent's ``write_memory``
tool. Below it: one line per finished round, written by the policy, which the tool keeps whatever the
agent writes, so a failure stays remembered even when the notes forget it.
"""

from __future__ import annotations

import re
from pathlib import Path

LOG_HEADING = "## Round log (one line per round, kept by vibeserve)"
NOTES_LIMIT = 20_000  # characters; a memory that grows without bound crowds out the brief


class MemoryRefused(ValueError):
    """An agent's write the memory refuses; the message says what to change."""


class RoundMemory:
    """``memory.md`` at ``path``: notes plus an append-only round log."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> str:
        """The whole file, notes then log ("" when nothing was written yet)."""
        return self.path.read_text() if self.path.exists() else ""

    def _parts(self) -> tuple[str, list[str]]:
        text = self.read()
        notes, sep, log = text.partition(LOG_HEADING)
        lines = [line for line in log.splitlines() if line.startswith("- ")] if sep else []
        return notes.strip(), lines

    def notes(self) -> str:
        return self._parts()[0]

    def log(self) -> list[str]:
        return self._parts()[1]

    def write_notes(self, text: str) -> None:
        """Replace the notes with ``text``; the round log stays as it is."""
        if LOG_HEADING in text:
            raise MemoryRefused("write only your notes: the round log below them is kept by vibeserve and must "
                               f"not be included (remove the line {LOG_HEADING!r} and what follows it)")
        if len(text) > NOTES_LIMIT:
            raise MemoryRefused(f"the notes are {len(text)} characters; keep them under {NOTES_LIMIT} by dropping "
                               "what no longer matters")
        self._save(text.strip(), self.log())

    def record_round(self, n: int, line: str) -> bool:
        """Append ``- round N: line`` unless round N is logged already; return whether it was added."""
        notes, log = self._parts()
        if any(re.match(rf"- round {n}:", entry) for entry in log):
            return False  # observed before a restart
        self._save(notes, [*log, f"- round {n}: {' '.join(line.split())}"])
        return True

    def _save(self, notes: str, log: list[str]) -> None:
        text = (notes + "\n\n" if notes else "") + LOG_HEADING + "\n" + "".join(f"{entry}\n" for entry in log)
        tmp = self.path.with_suffix(".md.tmp")
        tmp.write_text(text)
        tmp.replace(self.path)  # a kill mid-write leaves the old memory, never half of it
