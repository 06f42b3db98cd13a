"""The framework's own gates: accuracy checker and benchmark, run against a started candidate.

Every gate returns a ``GateVerdict`` that names the commit, the command and the time it came from; a
gate never raises for a candidate's failure, it records why the candidate failed.
"""

from __future__ import annotations

import fcntl
import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vibeserve.gates.server import CandidateServer
from vibeserve.process import CommandNotRunnable, clean_env, run
from vibeserve.target.spec import Target, finite_metric
from vibeserve.types import GateName, GateVerdict


def read_report(path: Path) -> tuple[dict[str, Any] | None, str]:
    if not path.is_file():
        return None, f"it wrote no report at {path}"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return None, f"its report {path} is not JSON: {e}"
    if not isinstance(data, dict):
        return None, f"its report {path} is not a JSON object"
    return data, ""


def accuracy_gate(target: Target, server: CandidateServer, commit: str, log_dir: Path) -> GateVerdict:
    """Run the target's accuracy checker against ``server``; exit 0 passes."""
    spec = target.spec.accuracy
    report_path = log_dir / "accuracy.json"
    report_path.unlink(missing_ok=True)
    argv = target.render(spec.command, url=server.url, port=server.port, report=report_path)
    started, t0 = time.time(), time.monotonic()
    common = {"gate": GateName.ACCURACY, "commit": commit, "command": argv, "started_at": started}
    try:
        done = run(argv, target.root, log_dir, "accuracy", spec.timeout_s, env=clean_env())
    except CommandNotRunnable as e:
        return GateVerdict(passed=False, reason=str(e), wall_s=time.monotonic() - t0, **common)
    report, problem = read_report(report_path)
    wall = time.monotonic() - t0
    if done.timed_out:
        return GateVerdict(passed=False, reason=f"the accuracy checker timed out after {spec.timeout_s:.0f} s",
                           report=report or {}, wall_s=wall, **common)
    if done.returncode != 0:
        return GateVerdict(passed=False, reason=f"the accuracy checker failed (exit {done.returncode}):\n"
                           f"{done.tail(3000)}", report=report or {}, wall_s=wall, **common)
    return GateVerdict(passed=True, reason=problem, report=report or {}, wall_s=wall, **common)


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold a machine-wide lock so that no two benchmark gates share the cores at the same time."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def benchmark_gate(
    target: Target, server: CandidateServer, commit: str, log_dir: Path, lock_path: Path
) -> GateVerdict:
    """Run the benchmark ``warmup + repeats`` times on the warm server; the median of the repeats ranks."""
    spec = target.spec.benchmark
    started, t0 = time.time(), time.monotonic()
    samples: list[float] = []
    reports: list[dict[str, Any]] = []
    argv: list[str] = []

    def verdict(passed: bool, reason: str = "") -> GateVerdict:
        median = statistics.median(samples) if samples else None
        spread = (max(samples) - min(samples)) / abs(median) if samples and median else None
        return GateVerdict(
            gate=GateName.BENCHMARK, passed=passed, commit=commit, reason=reason, metric=median if passed else None,
            samples=samples, spread=spread, report={"runs": reports}, command=argv, started_at=started,
            wall_s=time.monotonic() - t0,
        )

    with exclusive(lock_path):
        for i in range(spec.warmup + spec.repeats):
            warm = i < spec.warmup
            name = f"bench-warmup{i}" if warm else f"bench{i - spec.warmup}"
            report_path = log_dir / f"{name}.json"
            report_path.unlink(missing_ok=True)
            responses = log_dir / f"{name}.responses.jsonl"
            argv = target.render(spec.command, url=server.url, port=server.port, report=report_path,
                                 responses=responses)
            try:
                done = run(argv, target.root, log_dir, name, spec.timeout_s, env=clean_env())
            except CommandNotRunnable as e:
                return verdict(False, str(e))
            if done.timed_out:
                return verdict(False, f"benchmark run {name} timed out after {spec.timeout_s:.0f} s")
            if done.returncode != 0:
                return verdict(False, f"benchmark run {name} failed (exit {done.returncode}):\n{done.tail(3000)}")
            if server.proc is None or server.proc.poll() is not None:
                return verdict(False, f"the deliverable exited during benchmark run {name}")
            report, problem = read_report(report_path)
            if report is None:
                return verdict(False, f"benchmark run {name}: {problem}")
            try:
                value = finite_metric(report, spec.metric)
            except KeyError:
                return verdict(False, f"benchmark run {name}: its report has no metric {spec.metric!r} "
                               f"(keys: {', '.join(sorted(report))[:300]})")
            except ValueError as e:
                return verdict(False, f"benchmark run {name}: {e}")
            failed = report.get("failed")
            if isinstance(failed, (int, float)) and not isinstance(failed, bool) and failed > 0:
                # A failed or cut-short request counts against the candidate, whatever the metric says.
                return verdict(False, f"benchmark run {name}: {failed:g} request(s) failed; every request must "
                               "complete for a measurement to count")
            if not warm:
                samples.append(value)
                reports.append(report)
    return verdict(True)
