"""The profiles a run kept, read back from ``logs/rNNN/aA/profiles/<role>-<n>/`` for the report and the dashboard."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vibeserve.profiling.stacks import MODEL


@dataclass(frozen=True)
class ProfileEntry:
    """One profile folder: who asked for it, what it found in a line, and its main file."""

    attempt: int
    name: str  # <role>-<n>
    folder: Path
    headline: str  # e.g. "model forward 62.1% of 1834 samples", or why there is no profile
    ok: bool

    @property
    def main_file(self) -> Path:
        """The flame graph when there is one, else the summary or the error."""
        for name in ("flamegraph.svg", "summary.txt", "error.txt"):
            if (self.folder / name).is_file():
                return self.folder / name
        return self.folder


def _attempt(folder: Path) -> int:
    a = folder.parent.parent.name.removeprefix("a")
    return int(a) if a.isdigit() else 0


def round_profiles(logs: Path, n: int) -> list[ProfileEntry]:
    """Round ``n``'s profiles, by attempt and then in the order they were made."""
    out = []
    folders = [p for p in (logs / f"r{n:03d}").glob("a*/profiles/*") if p.is_dir()]
    for folder in sorted(folders, key=lambda p: (_attempt(p), p.name.rpartition("-")[0],
                                                 int(p.name.rpartition("-")[2] or 0) if p.name[-1:].isdigit() else 0)):
        headline, ok = _headline(folder)
        out.append(ProfileEntry(_attempt(folder), folder.name, folder, headline, ok))
    return out


def _headline(folder: Path) -> tuple[str, bool]:
    try:
        meta = json.loads((folder / "profile.json").read_text())
        parts, samples = meta["parts"], int(meta["samples"])
    except (OSError, ValueError, KeyError, TypeError):
        error = folder / "error.txt"
        said = error.read_text(errors="replace").strip().splitlines()[:1] if error.is_file() else []
        return (f"no profile: {said[0]}" if said else "no profile (unfinished)"), False
    gpu = meta.get("gpu") or {}
    kernels = (f"; GPU {100 * gpu['kernel_share']:.0f}% in kernels, top {_short(gpu['top_kernel'])} "
               f"{100 * gpu['top_kernel_share']:.0f}%" if gpu.get("top_kernel") else "")
    if not samples:
        return "no samples" + kernels, True
    return f"{MODEL} {100 * parts.get(MODEL, 0) / samples:.0f}% of {samples} samples{kernels}", True


def _short(kernel: str, width: int = 40) -> str:
    return kernel if len(kernel) <= width else kernel[: width - 1] + "…"
