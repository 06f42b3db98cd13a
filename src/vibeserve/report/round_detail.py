"""What each round's gates found, in short: gate results per attempt, the timed repeats, latency percentiles,
the machine's other load, warnings, the candidate's diffstat and links to its logs, transcripts and profiles.

Read from the ``gates`` rows of the run store, the run's git repo (``runs/<id>/repo``) and the files under
``runs/<id>/logs`` and ``runs/<id>/transcripts``. Pure reads.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vibeserve.gates.gain import fmt
from vibeserve.profiling.listing import round_profiles
from vibeserve.report.tables import benchmark_info, one_line
from vibeserve.store import RunStore
from vibeserve.workspace import GitError, git

GATE_ORDER = {"accuracy": 0, "probes": 1, "benchmark": 2}
# The latency percentiles shown when a benchmark's reports carry them (`vllm bench serve` field names).
LATENCIES = (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"))


@dataclass(frozen=True)
class Latency:
    """One latency's p50 and p99 in ms: for each, the median over the timed repeats."""

    name: str
    p50: float | None
    p99: float | None


@dataclass(frozen=True)
class Link:
    """A file or folder of the run, as a path relative to the report's folder."""

    label: str
    href: str


@dataclass(frozen=True)
class DiffStat:
    """Lines added and removed per file between a round's start commit and its candidate."""

    files: list[tuple[str, int, int]]  # (path, added, removed); binary files count 0 and 0

    @property
    def summary(self) -> str:
        n = len(self.files)
        added, removed = sum(f[1] for f in self.files), sum(f[2] for f in self.files)
        return f"{n} file{'' if n == 1 else 's'}, +{added} -{removed}"


@dataclass(frozen=True)
class AttemptGates:
    """The gates one attempt ran, each in short form: ``accuracy pass``, ``probes 6/6``, ``audit 4/4 of 12``."""

    attempt: int
    results: list[str]

    @property
    def line(self) -> str:
        return ", ".join(self.results)


@dataclass(frozen=True)
class RoundDetail:
    """The evidence behind one round's row."""

    round: int
    attempts: list[AttemptGates]
    samples: list[float]  # the timed repeats of the deciding benchmark; empty when none was measured
    spread: float | None  # (max - min) / median of the samples
    latency: list[Latency]
    other_cores: float | None  # other work on the machine while it measured, in cores
    cores: int | None
    warnings: list[str]
    diff: DiffStat | None
    logs: list[Link] = field(default_factory=list)
    transcripts: list[Link] = field(default_factory=list)
    profiles: list[Link] = field(default_factory=list)  # label: "a1/evaluator-1: model forward 62% of ..."
    paired: str = ""  # [benchmark].paired: the pairs with the best, their ratio and its interval, in one line

    @property
    def gates(self) -> str:
        """The deciding (last) attempt's gates in one line; '' when no gate ran."""
        return self.attempts[-1].line if self.attempts else ""


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def _report(row: Any) -> dict[str, Any]:
    """A gate row's report; a checker's own report may be anything, so anything but an object reads as empty."""
    report = _json(row["report"])
    return report if isinstance(report, dict) else {}


def _warnings(row: Any) -> list[str]:
    warnings = _report(row).get("warnings")
    return [one_line(str(w)) for w in warnings] if isinstance(warnings, list) else []


def gate_result(row: Any, unit: str) -> list[str]:
    """A ``gates`` row in short form; a benchmark with an output audit gives two entries."""
    gate, passed = row["gate"], bool(row["passed"])
    report = _report(row)
    if gate == "probes" and isinstance(report.get("total"), int):
        failures = report.get("failures")
        total, failures = report["total"], failures if isinstance(failures, int) else 0
        return [f"probes {total - failures}/{total}"]
    if gate != "benchmark":
        return [f"{gate} {'pass' if passed else 'fail'}"]
    samples = _json(row["samples"]) or []
    audit = report.get("audit") if isinstance(report.get("audit"), dict) else None
    metric = row["metric"]
    if metric is None and audit is not None and samples:  # measured, then failed by its audit
        metric = statistics.median(samples)
    out = [f"benchmark {fmt(metric)}{' ' + unit if unit else ''}" if metric is not None else "benchmark fail"]
    if audit is not None:
        checked = int(audit.get("checked") or 0)
        ok = sum(1 for r in audit.get("results") or [] if r.get("status") == "ok")
        of = audit.get("of")
        out.append(f"audit {ok}/{checked}" + (f" of {of}" if isinstance(of, int) and of != checked else "")
                   if checked else "audit fail")
    return out


def _latency(runs: list[Any]) -> list[Latency]:
    def median_of(key: str) -> float | None:
        values = [r[key] for r in runs if isinstance(r, dict) and isinstance(r.get(key), (int, float))]
        return statistics.median(values) if values else None

    out = []
    for name, key in LATENCIES:
        p50, p99 = median_of(f"median_{key}_ms"), median_of(f"p99_{key}_ms")
        if p50 is not None or p99 is not None:
            out.append(Latency(name, p50, p99))
    return out


def diffstat(repo: Path, start: str | None, candidate: str | None) -> DiffStat | None:
    """``git diff --numstat start candidate`` in the run's repo; None when either commit is unknown there."""
    if not start or not candidate or not (repo / ".git").exists():
        return None
    try:
        out = git(repo, "diff", "--numstat", start, candidate)
    except GitError:
        return None
    files = []
    for line in out.splitlines():
        added, removed, path = line.split("\t", 2)
        files.append((path, int(added) if added.isdigit() else 0, int(removed) if removed.isdigit() else 0))
    return DiffStat(files)


def diffstats(repo: Path, pairs: list[tuple[str | None, str | None]],
              known: dict[tuple[str, str], DiffStat] | None = None) -> dict[tuple[str, str], DiffStat]:
    """The diffstat of every ``(start, candidate)`` pair, in two git calls however many pairs (the commits'
    trees, then one ``git diff-tree --stdin``); pairs the repo does not hold are left out. ``known`` carries
    results between calls: a pair of commits always has the same diff."""
    known = {} if known is None else known
    want = sorted({(a, b) for a, b in pairs if a and b and (a, b) not in known})
    if want and (repo / ".git").exists():
        shas = sorted({sha for pair in want for sha in pair})
        try:
            found = git(repo, "cat-file", "--batch-check", stdin="".join(f"{sha}^{{tree}}\n" for sha in shas))
            trees = {sha: parts[0] for sha, parts in zip(shas, (line.split() for line in found.splitlines()), strict=True)
                     if len(parts) == 3 and parts[1] == "tree"}
            asked = [(pair, trees[pair[0]], trees[pair[1]]) for pair in want if pair[0] in trees and pair[1] in trees]
            out = git(repo, "diff-tree", "--stdin", "-r", "-M", "--numstat",
                      stdin="".join(f"{a} {b}\n" for _, a, b in asked)) if asked else ""
        except GitError:
            return {p: known[p] for p in pairs if p in known}
        by_trees: dict[tuple[str, ...], list[tuple[str, int, int]]] = {}
        files: list[tuple[str, int, int]] = []
        for line in out.splitlines():
            if "\t" not in line:  # "<tree> <tree>": the pair the lines after it belong to
                files = by_trees.setdefault(tuple(line.split()), [])
                continue
            added, removed, path = line.split("\t", 2)
            files.append((path, int(added) if added.isdigit() else 0, int(removed) if removed.isdigit() else 0))
        for pair, a, b in asked:
            known[pair] = DiffStat(by_trees.get((a, b), []))
    return {p: known[p] for p in pairs if p in known}  # type: ignore[index]


def _gate_dir_order(found: tuple[str, str]) -> tuple[int, int, str]:
    attempt, gate = found[0].removeprefix("a"), found[1]
    return (int(attempt) if attempt.isdigit() else 0, GATE_ORDER.get(gate, len(GATE_ORDER)), gate)


def _gate_dirs(logs: Path, n: int) -> list[tuple[str, str]]:
    """Round ``n``'s gate log folders as (attempt folder, gate), in the order the gates ran."""
    found: list[tuple[str, str]] = []
    try:
        with os.scandir(logs / f"r{n:03d}") as attempts:
            for a in attempts:
                if a.name.startswith("a") and a.is_dir():
                    with os.scandir(a.path) as gates:
                        found += [(a.name, g.name) for g in gates if g.is_dir() and g.name != "profiles"]
    except OSError:  # no logs for this round (yet)
        return []
    return sorted(found, key=_gate_dir_order)


def round_details(store: RunStore, link_base: Path, diffs: bool = True,
                  diff_cache: dict[tuple[str, str], DiffStat] | None = None,
                  only: set[int] | None = None) -> dict[int, RoundDetail]:
    """Every round's evidence (or the ``only`` rounds'), by round number; links are relative to ``link_base``
    (the report's folder). ``diffs=False`` skips the diffstats; ``diff_cache`` keeps them between calls."""
    unit = benchmark_info(store).unit
    by_round: dict[int, list[Any]] = {}
    for row in store.gates():
        by_round.setdefault(row["round"], []).append(row)
    repo, logs = store.dir / "repo", store.dir / "logs"
    rounds = [r for r in store.rounds() if only is None or r["round"] in only]
    stats = diffstats(repo, [(r["start_commit"], r["candidate"]) for r in rounds if r["round"] > 0],
                      diff_cache) if diffs else {}
    transcripts: dict[str, list[Path]] = {}  # the folder listed once, not once per round
    for p in sorted(store.transcripts.glob("r*-*.jsonl")):
        transcripts.setdefault(p.name.split("-", 1)[0] + "-", []).append(p)
    # Links made by joining names to these two (a relpath per link costs more than the rest of a round).
    logs_href = Path(os.path.relpath(logs, link_base)).as_posix()
    transcripts_href = Path(os.path.relpath(store.transcripts, link_base)).as_posix()
    out = {}
    for r in rounds:
        n, rows = r["round"], by_round.get(r["round"], [])
        attempts: dict[int, list[str]] = {}
        for row in rows:
            attempts.setdefault(row["attempt"], []).extend(gate_result(row, unit))
        bench = [row for row in rows if row["gate"] == "benchmark" and _json(row["samples"])]
        last = bench[-1] if bench else None
        report = _report(last) if last else {}
        load = report.get("load") if isinstance(report.get("load"), dict) else {}
        warnings = [w for row in rows for w in _warnings(row)]
        prefix = f"r{n:03d}-"
        out[n] = RoundDetail(
            round=n,
            attempts=[AttemptGates(a, res) for a, res in sorted(attempts.items())],
            samples=_json(last["samples"]) if last else [],
            spread=last["spread"] if last else None,
            latency=_latency(report.get("runs") or []),
            other_cores=load.get("other_cores"), cores=load.get("cores"),
            warnings=list(dict.fromkeys(warnings)),
            diff=stats.get((r["start_commit"], r["candidate"])) if n > 0 else None,
            logs=[Link(f"{a}/{g}", f"{logs_href}/r{n:03d}/{a}/{g}/") for a, g in _gate_dirs(logs, n)],
            transcripts=[Link(p.stem.removeprefix(prefix), f"{transcripts_href}/{p.name}")
                         for p in transcripts.get(prefix, [])],
            profiles=[Link(f"a{p.attempt}/{p.name}: {p.headline}",
                           Path(os.path.relpath(p.main_file, link_base)).as_posix())
                      for p in round_profiles(logs, n)],
            paired=paired_line(report.get("paired")),
        )
    return out


def paired_line(paired: Any) -> str:
    """A paired benchmark in one line: each pair (candidate/best), the ratio and its interval, or why unpaired."""
    if not isinstance(paired, dict):
        return ""
    best = str(paired.get("best_commit") or "")[:10]
    if paired.get("error") or "interval" not in paired:
        return f"paired with {best}: none ({one_line(str(paired.get('error') or 'no interval'))})"
    pairs = ", ".join(f"{fmt(c)}/{fmt(b)}" for c, b in zip(paired["candidate"], paired["best"], strict=False))
    lo, hi = paired["interval"]
    return (f"paired with {best} ({' '.join(paired.get('order') or [])}): {pairs}; candidate/best "
            f"{fmt(paired['ratio'])}, {paired['confidence']:.0%} interval [{fmt(lo)}, {fmt(hi)}] ({paired['method']})")
