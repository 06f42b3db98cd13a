"""The framework's own gates: accuracy checker and benchmark, run against a started candidate.

Every gate returns a ``GateVerdict`` that names the commit, the command and the time it came from; a
gate never raises for a candidate's failure, it records why the candidate failed: a one-line ``reason``
and the evidence (the ends of the logs) in ``detail``.

The accuracy checker's contract: it writes a JSON object with a boolean ``passed`` to ``{report}``; exit 0
with ``passed: true`` passes, exit 1 with ``passed: false`` fails the candidate. Anything else (another
exit code, no report, a Python traceback, exit and report that disagree) is the checker failing, which is
the target's problem, not the candidate's: the verdict says so (``target_error``), unless the candidate
died meanwhile.
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
from vibeserve.process import CommandNotRunnable, Completed, clean_env, last_line, read_tail, run
from vibeserve.target.spec import Target, finite_metric
from vibeserve.types import GateName, GateVerdict

TRACEBACK = "Traceback (most recent call last):"


def read_report(path: Path) -> tuple[dict[str, Any] | None, str]:
    if not path.is_file():
        return None, f"it wrote no report at {path}"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, f"its report {path} is not JSON: {e}"
    if not isinstance(data, dict):
        return None, f"its report {path} is not a JSON object"
    return data, ""


def evidence(done: Completed | None, server: CandidateServer, n: int = 2500) -> str:
    """What the implementer needs to see: the command's output and the deliverable's own log tails."""
    parts = []
    if done is not None and (tail := done.tail(n).strip()):
        parts.append(f"--- {done.stdout_path.stem} output ---\n{tail}")
    if tail := server.tail(n).strip():
        parts.append(f"--- the deliverable's logs ---\n{tail}")
    return "\n".join(parts)


def accuracy_gate(target: Target, server: CandidateServer, commit: str, log_dir: Path) -> GateVerdict:
    """Run the target's accuracy checker against ``server``; see the module docstring for its contract."""
    spec = target.spec.accuracy
    report_path = log_dir / "accuracy.json"
    report_path.unlink(missing_ok=True)
    argv = target.render(spec.command, url=server.url, port=server.port, report=report_path)
    started, t0 = time.time(), time.monotonic()
    common = {"gate": GateName.ACCURACY, "commit": commit, "command": argv, "started_at": started}
    try:
        done = run(argv, target.root, log_dir, "accuracy", spec.timeout_s, env=clean_env())
    except CommandNotRunnable as e:
        return GateVerdict(passed=False, reason=str(e), target_error=True, wall_s=time.monotonic() - t0, **common)
    report, problem = read_report(report_path)
    common.update(report=report or {}, wall_s=time.monotonic() - t0, detail=evidence(done, server))
    passed = report.get("passed") if report else None
    ok = done.returncode == 0 and passed is True
    if (died := server.exited if ok else server.exited_within(1.0)) is not None:
        return GateVerdict(passed=False, reason=f"the deliverable exited with code {died} while the "
                           f"checker ran{server.limit_hit()}", **common)
    if done.timed_out:
        return GateVerdict(passed=False, reason=f"the accuracy checker timed out after {spec.timeout_s:.0f} s "
                           "(the deliverable answered too slowly or not at all)", **common)
    crashed = TRACEBACK in read_tail(done.stderr_path, 20000)
    if done.returncode == 0 and passed is True and not crashed:
        return GateVerdict(passed=True, **common)
    if done.returncode == 1 and passed is False and not crashed:
        said = next((str(report[k]) for k in ("reason", "summary", "error") if report.get(k)),  # type: ignore[union-attr]
                    last_line(done.tail()) or f"see its report {report_path}")
        return GateVerdict(passed=False, reason=f"the accuracy checker failed it: {said[:300]}", **common)
    if crashed:
        why = f"crashed (exit {done.returncode}): {last_line(read_tail(done.stderr_path))}"
    elif report is None:
        why = f"exited {done.returncode} and {problem}"
    elif not isinstance(passed, bool):
        why = f"exited {done.returncode} but its report has no boolean \"passed\""
    else:
        why = f"exited {done.returncode} with \"passed\": {str(passed).lower()} (0 must pass, 1 must fail)"
    return GateVerdict(passed=False, target_error=True, reason=f"the accuracy checker {why}; see "
                       f"{done.stderr_path}. A checker reports a failing candidate with exit 1 and "
                       "\"passed\": false", **common)


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


class RunFailed(Exception):
    """One benchmark run did not give a usable measurement: ``reason`` and the run that failed, if it ran."""

    def __init__(self, reason: str, done: Completed | None = None):
        super().__init__(reason)
        self.done = done


def bench_once(target: Target, server: CandidateServer, name: str, log_dir: Path,
               metrics: tuple[str, ...]) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    """One benchmark run on the started ``server``: each of ``metrics`` read from its report, the report, the
    command. Raises ``RunFailed`` for anything that makes the measurement not count."""
    spec = target.spec.benchmark
    report_path = log_dir / f"{name}.json"
    report_path.unlink(missing_ok=True)
    responses = log_dir / f"{name}.responses.jsonl"
    argv = target.render(spec.command, url=server.url, port=server.port, report=report_path, responses=responses)
    try:
        done = run(argv, target.root, log_dir, name, spec.timeout_s, env=clean_env())
    except CommandNotRunnable as e:
        raise RunFailed(str(e)) from None
    if (died := server.exited if done.returncode == 0 else server.exited_within(1.0)) is not None:
        raise RunFailed(f"the deliverable exited with code {died} during benchmark run {name}{server.limit_hit()}", done)
    if done.timed_out:
        raise RunFailed(f"benchmark run {name} timed out after {spec.timeout_s:.0f} s", done)
    if done.returncode != 0:
        raise RunFailed(f"benchmark run {name} failed (exit {done.returncode}): {last_line(done.tail())}; see "
                        f"{done.stdout_path}", done)
    report, problem = read_report(report_path)
    if report is None:
        raise RunFailed(f"benchmark run {name}: {problem}", done)
    values: dict[str, float] = {}
    for metric in metrics:
        try:
            values[metric] = finite_metric(report, metric)
        except KeyError:
            raise RunFailed(f"benchmark run {name}: its report has no metric {metric!r} "
                            f"(keys: {', '.join(sorted(report))[:300]})", done) from None
        except ValueError as e:
            raise RunFailed(f"benchmark run {name}: {e}", done) from None
    failed = report.get("failed")
    if isinstance(failed, (int, float)) and not isinstance(failed, bool) and failed > 0:
        # A failed or cut-short request counts against the candidate, whatever the metric says.
        kinds = report.get("failures") if isinstance(report.get("failures"), dict) else {}
        said = ", ".join(f"{k}: {v}" for k, v in list(kinds.items())[:4])
        raise RunFailed(f"benchmark run {name}: {failed:g} request(s) failed{f' ({said})' if said else ''}; "
                        "every request must complete for a measurement to count", done)
    return values, report, argv


def benchmark_gate(target: Target, server: CandidateServer, commit: str, log_dir: Path) -> GateVerdict:
    """Run the benchmark ``warmup + repeats`` times on the warm server; the median of the repeats ranks.

    The caller holds the machine's benchmark lock (outside any sandbox, where no candidate reaches it).
    """
    spec = target.spec.benchmark
    started, t0 = time.time(), time.monotonic()
    samples: list[float] = []
    further: dict[str, list[float]] = {o.metric: [] for o in spec.objectives}  # [[benchmark.objectives]]
    reports: list[dict[str, Any]] = []
    argv: list[str] = []

    def verdict(passed: bool, reason: str = "", done: Completed | None = None) -> GateVerdict:
        median = statistics.median(samples) if samples else None
        spread = (max(samples) - min(samples)) / abs(median) if samples and median else None
        return GateVerdict(
            gate=GateName.BENCHMARK, passed=passed, commit=commit, reason=reason, metric=median if passed else None,
            samples=samples, spread=spread,
            report={"runs": reports, **({"objectives": further} if further else {})}, command=argv, started_at=started,
            wall_s=time.monotonic() - t0, detail="" if passed else evidence(done, server),
        )

    for i in range(spec.warmup + spec.repeats):
        warm = i < spec.warmup
        name = f"bench-warmup{i}" if warm else f"bench{i - spec.warmup}"
        try:
            values, report, argv = bench_once(target, server, name, log_dir, (spec.metric, *further))
        except RunFailed as e:
            return verdict(False, str(e), e.done)
        if not warm:
            samples.append(values[spec.metric])
            for metric in further:
                further[metric].append(values[metric])
            reports.append(report)
    return verdict(True)
