"""What the dashboard shows, read from run stores opened read-only. Nothing here writes into a run.

The tables and numbers come from ``vibeserve.report`` (round rows, round details, the run summary); this
module adds what a live view needs on top: which runs there are, a cheap signature of a store that changes
when the store does, each round's gate verdicts with their reasons, the evolutionary policy's lineage, one
round's full diff and agent calls, and files of a run read only when their path stays inside it.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from vibeserve.errors import StoreError
from vibeserve.profiling.listing import round_profiles
from vibeserve.report.round_detail import RoundDetail, diffstat, round_details
from vibeserve.report.tables import RoundRow, one_line, round_rows, short_sha
from vibeserve.store import RunStore
from vibeserve.workspace import GitError, git

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# The folders of a run whose files the dashboard may show; everything else in a run stays unserved.
SERVED = ("logs", "transcripts")
TEXT_LIMIT = 512 * 1024  # a file or diff longer than this is shown cut, with a note saying so


class PathRefused(ValueError):
    """A requested path would leave the run's served folders."""


def open_readonly(run_dir: Path) -> RunStore:
    """A ``RunStore`` over ``run_dir/run.db`` opened with ``mode=ro``: it can read a store a live run is
    writing (WAL) and cannot write to it."""
    path = run_dir / RunStore.FILE
    if not path.is_file():
        raise StoreError(f"{path} does not exist: {run_dir} is not a vibeserve run")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} cannot be read as a run store ({e})") from None
    if "run" not in tables or "rounds" not in tables:
        conn.close()
        raise StoreError(f"{path} is not a vibeserve run store")
    return RunStore(run_dir, conn)


@dataclass(frozen=True)
class RunSource:
    """The runs the dashboard serves: the named ones, or every run under ``runs_dir`` (looked up on each
    request, so a run started after the dashboard shows up)."""

    runs_dir: Path
    named: dict[str, Path] = field(default_factory=dict)

    def runs(self) -> dict[str, Path]:
        if self.named:
            return dict(self.named)
        found = [p.parent for p in self.runs_dir.glob("*/run.db") if RUN_ID.fullmatch(p.parent.name)]
        return {p.name: p for p in sorted(found, key=lambda p: p.name)}

    def get(self, run_id: str) -> Path | None:
        if not RUN_ID.fullmatch(run_id):
            return None
        return self.runs().get(run_id)


def signature(run_dirs: list[Path]) -> tuple:
    """Size and mtime of each store's files: changes whenever a writer commits (the WAL grows or is
    checkpointed) and costs a few ``stat`` calls."""
    out = []
    for d in run_dirs:
        for name in (RunStore.FILE, RunStore.FILE + "-wal"):
            try:
                st = os.stat(d / name)
            except OSError:
                out.append((str(d), name, None))
                continue
            out.append((str(d), name, st.st_mtime_ns, st.st_size))
    return tuple(out)


# -- the run page --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """One gate's verdict with its reason."""

    gate: str
    passed: bool
    reason: str
    attempt: int


@dataclass(frozen=True)
class RoundView:
    """One row of the round table: the report's row and evidence plus what the live view adds."""

    row: RoundRow
    detail: RoundDetail | None
    verdicts: list[Verdict]  # the deciding (last) attempt's gates
    parent: str | None  # the evolutionary policy's chosen parent (short sha), if any
    parent_round: int | None
    wall_s: float | None  # from the run's start to this round's end


@dataclass(frozen=True)
class Edge:
    """A lineage edge of the evolutionary archive: ``round`` grew from ``parent_round``."""

    parent_round: int
    round: int


def verdicts_by_round(store: RunStore) -> dict[int, list[Verdict]]:
    """Each round's last attempt's gate verdicts, in the order they ran."""
    by: dict[int, list[Verdict]] = {}
    for g in store.gates():
        by.setdefault(g["round"], []).append(Verdict(g["gate"], bool(g["passed"]), one_line(g["reason"]), g["attempt"]))
    return {n: [v for v in vs if v.attempt == vs[-1].attempt] for n, vs in by.items()}


def lineage(store: RunStore) -> tuple[dict[int, str], list[Edge]]:
    """The evolutionary policy's parent per round (short sha) and the edges parent round -> round; empty for
    other policies."""
    if not store.has_table("evo_selections") or not store.has_table("evo_candidates"):
        return {}, []
    round_of = {}
    for c in store.query("SELECT round, commit_sha FROM evo_candidates ORDER BY round, attempt"):
        round_of.setdefault(c["commit_sha"], c["round"])
    for r in store.rounds():  # a round's final candidate, whichever attempt made it
        if r["candidate"]:
            round_of.setdefault(r["candidate"], r["round"])
    parents, edges = {}, []
    for s in store.query("SELECT round, parent FROM evo_selections ORDER BY round"):
        parents[s["round"]] = s["parent"]
        if s["parent"] in round_of:
            edges.append(Edge(round_of[s["parent"]], s["round"]))
    return parents, edges


def round_views(store: RunStore, diffs: bool = True, diff_cache: dict | None = None,
                detail_rounds: set[int] | None = None) -> list[RoundView]:
    """The round table: every round with its verdicts, diffstat, parent and wall time. ``detail_rounds``
    limits the evidence (diffstat, gate summaries, links) to the rounds a page shows; ``diff_cache`` keeps the
    diffstats between calls (a page that updates itself asks for the same ones each time)."""
    created = store.run()["created_at"]
    details = round_details(store, store.dir, diffs=diffs, diff_cache=diff_cache, only=detail_rounds)
    verdicts = verdicts_by_round(store)
    parents, edges = lineage(store)
    parent_round = {e.round: e.parent_round for e in edges}
    ends = {r["round"]: r["finished_at"] for r in store.rounds()}
    return [
        RoundView(row=row, detail=details.get(row.round), verdicts=verdicts.get(row.round, []),
                  parent=short_sha(parents.get(row.round)), parent_round=parent_round.get(row.round),
                  wall_s=None if ends.get(row.round) is None else max(0.0, ends[row.round] - created))
        for row in round_rows(store)
    ]


# -- one round -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AgentCallRow:
    """One agent call of a round, with its cost and its transcript's path inside the run."""

    key: str
    role: str
    harness: str
    model: str
    exit_reason: str
    tokens_in: int
    tokens_out: int
    cost_usd: float | None
    wall_s: float
    error: str
    transcript: str | None


@dataclass(frozen=True)
class RunFile:
    """A served file of the run, by its path relative to the run folder."""

    path: str
    size: int


@dataclass(frozen=True)
class RoundPage:
    """Everything the round page shows."""

    view: RoundView
    task: dict[str, Any]
    result: dict[str, Any]
    gates: list[dict[str, Any]]  # every attempt's gate rows
    diff: str
    diff_cut: bool
    calls: list[AgentCallRow]
    logs: list[RunFile]
    transcripts: list[RunFile]
    profiles: list[tuple[str, str]] = field(default_factory=list)  # (label, path inside the run)


def _loads(text: str | None) -> dict[str, Any]:
    try:
        v = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return v if isinstance(v, dict) else {}


def _relative(run_dir: Path, path: str | None) -> str | None:
    """A path the store recorded, relative to the run folder when it lies inside it; None otherwise."""
    if not path:
        return None
    p = Path(path)
    try:
        return (p if not p.is_absolute() else p.resolve().relative_to(run_dir.resolve())).as_posix()
    except ValueError:
        return None


def round_diff(store: RunStore, start: str | None, candidate: str | None) -> tuple[str, bool]:
    """``git diff start candidate`` in the run's repo, cut at ``TEXT_LIMIT``; '' when either is unknown."""
    repo = store.dir / "repo"
    if not start or not candidate or not (repo / ".git").exists():
        return "", False
    try:
        text = git(repo, "diff", start, candidate)
    except GitError:
        return "", False
    return (text[:TEXT_LIMIT], True) if len(text) > TEXT_LIMIT else (text, False)


def _files(run_dir: Path, folder: Path, pattern: str) -> list[RunFile]:
    out = []
    for p in sorted(folder.glob(pattern)):
        if p.is_file() and not p.is_symlink():
            out.append(RunFile(p.relative_to(run_dir).as_posix(), p.stat().st_size))
    return out


def round_page(store: RunStore, n: int) -> RoundPage | None:
    """Round ``n``'s task, gates, full diff, agent calls with costs, logs and transcripts; None if unknown."""
    r = store.round(n)
    if r is None:
        return None
    view = next(v for v in round_views(store, diffs=False) if v.row.round == n)
    if view.detail is not None and n > 0:  # the diffstat of this round only: one git call, not one per round
        view = replace(view, detail=replace(view.detail, diff=diffstat(store.dir / "repo", r["start_commit"],
                                                                       r["candidate"])))
    diff, cut = round_diff(store, r["start_commit"], r["candidate"]) if n > 0 else ("", False)
    calls = [
        AgentCallRow(key=c["key"], role=c["role"], harness=c["harness"], model=c["model"] or "",
                     exit_reason=c["exit_reason"], tokens_in=c["tokens_in"], tokens_out=c["tokens_out"],
                     cost_usd=c["cost_usd"], wall_s=c["wall_s"], error=one_line(c["error"]),
                     transcript=_relative(store.dir, c["transcript"]))
        for c in store.agent_calls() if c["round"] == n
    ]
    gates = [{"attempt": g["attempt"], "gate": g["gate"], "passed": bool(g["passed"]), "reason": g["reason"],
              "metric": g["metric"], "spread": g["spread"], "wall_s": g["wall_s"],
              "commit": short_sha(g["commit_sha"]),
              "logs": f"logs/r{n:03d}/a{g['attempt']}/{g['gate']}"} for g in store.gates(n)]
    return RoundPage(
        view=view, task=_loads(r["task"]), result=_loads(r["result"]), gates=gates, diff=diff, diff_cut=cut,
        calls=calls, logs=_files(store.dir, store.dir / "logs" / f"r{n:03d}", "**/*"),
        transcripts=_files(store.dir, store.transcripts, f"r{n:03d}-*"),
        profiles=[(f"a{e.attempt}/{e.name}: {e.headline}", e.main_file.relative_to(store.dir).as_posix())
                  for e in round_profiles(store.dir / "logs", n)],
    )


# -- files of a run ------------------------------------------------------------------------------------
def served_path(run_dir: Path, rel: str) -> Path:
    """``rel`` resolved inside one of the run's served folders; ``PathRefused`` for an absolute path, a
    ``..`` part, anything outside ``logs/`` and ``transcripts/``, or a link that leads out of them."""
    if not rel or "\\" in rel or "\x00" in rel:
        raise PathRefused(f"{rel!r} is not a path inside the run")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or pure.parts[0] not in SERVED:
        raise PathRefused(f"{rel!r} is not inside the run's {' or '.join(SERVED)} folder")
    root = run_dir.resolve()
    path = (root / pure).resolve()
    if not any(path.is_relative_to(root / s) for s in SERVED):
        raise PathRefused(f"{rel!r} leads outside the run")
    return path


def read_text(path: Path) -> tuple[str, bool]:
    """A file's text (undecodable bytes replaced), its last ``TEXT_LIMIT`` bytes when longer; and whether
    it was cut."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size > TEXT_LIMIT:
            f.seek(size - TEXT_LIMIT)
        data = f.read(TEXT_LIMIT)
    return data.decode("utf-8", errors="replace"), size > TEXT_LIMIT


def folder_listing(run_dir: Path, path: Path) -> list[RunFile]:
    """The files under a served folder, recursively."""
    return _files(run_dir.resolve(), path, "**/*")
