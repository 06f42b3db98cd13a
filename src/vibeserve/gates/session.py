"""One gate session: start the candidate, run one gate against it, stop it, return the verdict.

A session is described by a ``GateJob`` (plain data), so it can run in this process or, isolated, in a
child process (``python -P -m vibeserve.gates.session JOB.json VERDICT.json``) inside the judges' sandbox
(``run_sandboxed``): the checker and the benchmark run there, beside nothing but loopback, and the
candidate in a sandbox of its own inside it (``CandidateJail``), from which it can reach none of them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from vibeserve.gates.checks import accuracy_gate, benchmark_gate, read_report
from vibeserve.gates.paired import paired_benchmark
from vibeserve.gates.probes import ask_all
from vibeserve.gates.server import CandidateServer, ServerNotReady
from vibeserve.jail import CandidateJail
from vibeserve.process import CommandNotRunnable, clean_env, last_line, read_tail, run, spawn
from vibeserve.sandbox import Sandbox, SandboxMode
from vibeserve.target.spec import Deliverable, Target, load_target
from vibeserve.types import GateName, GateVerdict


class GateJob(BaseModel):
    """Everything one gate session needs; paths are absolute."""

    model_config = ConfigDict(extra="forbid")

    gate: GateName
    target_root: Path
    workdir: Path  # the candidate's tree (the deliverable is started from here)
    log_dir: Path
    commit: str
    round: int = 0
    jail: CandidateJail = CandidateJail(mode=SandboxMode.NONE)
    # The probe gate's inputs, one request a line (made before the session; the reference's answers are
    # made after it, so no expected output exists anywhere while the candidate runs).
    probes_file: Path | None = None
    probe_seed: int = 0  # for a target's own probe command ({seed})
    # A paired benchmark ([benchmark].paired): the current best's tree and commit, started beside the
    # candidate, and its own control group (each server has its own limits).
    pair_workdir: Path | None = None
    pair_commit: str = ""
    pair_cgroup: list[Path] = []
    # A control-arm trial (vibeserve baseline): a stock engine's start and ready settings in place of the
    # target's [deliverable].
    deliverable: Deliverable | None = None


def run_gate_session(
    job: GateJob,
    on_start: Callable[[int], None] | None = None,
    on_stop: Callable[[int], None] | None = None,
) -> GateVerdict:
    """Never raises for the candidate's faults: a server that does not start is a failed verdict."""
    target = load_target(job.target_root)
    if job.deliverable is not None:
        target = Target(target.root, target.spec.model_copy(update={"deliverable": job.deliverable}))
    server = CandidateServer(target, job.workdir, job.log_dir, "server", on_start=on_start, on_stop=on_stop,
                             jail=job.jail)
    try:
        with server:
            if job.gate is GateName.ACCURACY:
                return accuracy_gate(target, server, job.commit, job.log_dir)
            if job.gate is GateName.PROBES:
                return probe_gate(target, server, job)
            if job.pair_workdir is not None:
                return _paired(target, server, job, on_start, on_stop)
            return benchmark_gate(target, server, job.commit, job.log_dir)
    except ServerNotReady as e:
        return GateVerdict(gate=job.gate, passed=False, commit=job.commit, reason=str(e), detail=e.detail,
                           command=server.argv)
    except CommandNotRunnable as e:
        return GateVerdict(gate=job.gate, passed=False, commit=job.commit, reason=str(e), command=server.argv)


def _paired(target: Target, server: CandidateServer, job: GateJob, on_start: Callable[[int], None] | None,
            on_stop: Callable[[int], None] | None) -> GateVerdict:
    """Start the best beside the warm candidate and measure the two alternately; a best that does not start
    (it passed before: the machine, not the candidate, is at fault) leaves the candidate measured alone."""
    assert job.pair_workdir is not None
    limits = job.jail.limits.model_copy(update={"cgroup": job.pair_cgroup})
    best = CandidateServer(target, job.pair_workdir, job.log_dir / "best", "server", on_start=on_start,
                           on_stop=on_stop, jail=job.jail.model_copy(update={"limits": limits}))
    (job.log_dir / "best").mkdir(parents=True, exist_ok=True)
    try:
        with best:
            return paired_benchmark(target, server, best, job.commit, job.pair_commit, job.log_dir)
    except (ServerNotReady, CommandNotRunnable) as e:
        verdict = benchmark_gate(target, server, job.commit, job.log_dir)
        why = f"the best ({job.pair_commit[:10]}) did not start: {e}"
        return verdict.model_copy(update={
            "report": {**verdict.report, "paired": {"error": why, "best_commit": job.pair_commit}},
            "warnings": [*verdict.warnings, f"paired measurement abandoned: {why}"]})


def probe_gate(target: Target, server: CandidateServer, job: GateJob) -> GateVerdict:
    """Fresh inputs the candidate has never seen, answered all at once, compared with the reference."""
    spec = target.spec.probes
    started, t0 = time.time(), time.monotonic()
    common = {"gate": GateName.PROBES, "commit": job.commit, "started_at": started}
    if spec.kind == "command":
        report_path = job.log_dir / "probes.json"
        argv = target.render(spec.command, url=server.url, port=server.port, report=report_path, seed=job.probe_seed)
        done = run(argv, target.root, job.log_dir, "probes", spec.timeout_s, env=clean_env())
        report = read_report(report_path)[0] or {}  # a missing or malformed report is not fatal here
        passed = done.returncode == 0 and not done.timed_out
        reason = "" if passed else (f"the probe command timed out after {spec.timeout_s:.0f} s" if done.timed_out
                                    else f"the probe command failed (exit {done.returncode}): {last_line(done.tail())}")
        return GateVerdict(**common, passed=passed, reason=reason, report=report, command=argv,
                           detail="" if passed else done.tail(2500), wall_s=time.monotonic() - t0)
    assert job.probes_file is not None, "an openai-completions or openai-images probe gate needs its probes file"
    # Only the answers are collected here; the framework compares them with the reference after the
    # candidate has stopped, so no expected output exists anywhere while the candidate runs.
    requests = [json.loads(line) for line in job.probes_file.read_text().splitlines() if line.strip()]
    answers = ask_all(server.url, requests, timeout=spec.timeout_s)
    return GateVerdict(**common, passed=True, report={"answers": [{**(a or {}), "error": e} for a, e in answers]},
                       command=[f"{len(requests)} probe requests to {server.url}"], wall_s=time.monotonic() - t0,
                       detail=server.tail(2500))


def session_timeout(target: Target, gate: GateName) -> float:
    """A bound on a whole session: every step inside has its own timeout; this one catches a hung session."""
    spec = target.spec
    grace = 120.0
    if gate is GateName.BENCHMARK:
        runs = spec.benchmark.warmup + spec.benchmark.repeats
        sides = 2 if spec.benchmark.paired else 1  # the best's server and runs too
        return sides * (spec.deliverable.ready_timeout_s + runs * spec.benchmark.timeout_s) + grace
    step = spec.probes.timeout_s if gate is GateName.PROBES else spec.accuracy.timeout_s
    return spec.deliverable.ready_timeout_s + step + grace


def run_sandboxed(
    job: GateJob,
    sandbox: Sandbox,
    on_start: Callable[[int], None] | None = None,
    on_stop: Callable[[int], None] | None = None,
) -> GateVerdict:
    """Run the session as a child process in the judges' sandbox with no credentials in its environment.

    ``on_start``/``on_stop`` get the child's process group (the sandbox, and all inside it, goes with it).
    A session that dies or writes no verdict is a failed verdict naming its log.
    """
    target = load_target(job.target_root)
    job.log_dir.mkdir(parents=True, exist_ok=True)
    job_path, verdict_path = job.log_dir / "session-job.json", job.log_dir / "session-verdict.json"
    job_path.write_text(job.model_dump_json())
    verdict_path.unlink(missing_ok=True)
    # -P and a current directory no agent writes: the session imports only the installed vibeserve.
    inner = [sys.executable, "-P", "-m", "vibeserve.gates.session", str(job_path), str(verdict_path)]
    argv = sandbox.judge_argv(inner, job.log_dir, writable=[job.log_dir, *job.jail.limits.cgroup, *job.pair_cgroup],
                              readonly=[job.workdir, *([job.pair_workdir] if job.pair_workdir else [])])
    timeout = session_timeout(target, job.gate)
    try:
        proc = spawn(argv, job.log_dir, job.log_dir, "session", env=clean_env())
    except CommandNotRunnable as e:
        return GateVerdict(gate=job.gate, passed=False, commit=job.commit, reason=str(e), command=argv)
    if on_start:
        on_start(proc.pgid)
    try:
        done = proc.wait(timeout)
    finally:
        proc.stop()
        if on_stop:
            on_stop(proc.pgid)
    try:
        return GateVerdict.model_validate_json(verdict_path.read_text())
    except (OSError, ValueError):
        pass
    why = (f"did not finish within {timeout:.0f} s and was killed" if done.timed_out
           else f"ended with exit code {done.returncode} and wrote no verdict")
    return GateVerdict(gate=job.gate, passed=False, commit=job.commit, command=argv,
                       reason=f"the {job.gate} gate session {why}; see {done.stderr_path}",
                       detail=read_tail(done.stderr_path, 2000))


def main(argv: list[str]) -> int:
    """``python -P -m vibeserve.gates.session JOB.json VERDICT.json``: exit 0 once the verdict is written."""
    if len(argv) != 2:
        print("usage: python -P -m vibeserve.gates.session JOB.json VERDICT.json", file=sys.stderr)
        return 2
    job = GateJob.model_validate_json(Path(argv[0]).read_text())
    verdict = run_gate_session(job)
    Path(argv[1]).write_text(verdict.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
