"""One gate session: start the candidate, run one gate against it, stop it, return the verdict.

A session is described by a ``GateJob`` (plain data), so it can run in this process or, isolated, in a
child process (``python -m vibeserve.gates.session JOB.json VERDICT.json``) that sees only loopback.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from vibeserve.gates.checks import accuracy_gate, benchmark_gate
from vibeserve.gates.probes import ask_all
from vibeserve.gates.server import CandidateServer, ServerNotReady
from vibeserve.process import CommandNotRunnable, clean_env, run
from vibeserve.target.spec import Target, load_target
from vibeserve.types import GateName, GateVerdict


class GateJob(BaseModel):
    """Everything one gate session needs; paths are absolute."""

    model_config = ConfigDict(extra="forbid")

    gate: GateName
    target_root: Path
    workdir: Path  # the candidate's tree (the deliverable is started from here)
    log_dir: Path
    commit: str
    bench_lock: Path
    round: int = 0
    # The probe gate's inputs and the reference's outputs for them, one {"request", "expected"} a line
    # (made before the session, so the reference never runs next to the candidate).
    probes_file: Path | None = None
    probe_seed: int = 0  # for a target's own probe command ({seed})


def run_gate_session(
    job: GateJob,
    on_start: Callable[[int], None] | None = None,
    on_stop: Callable[[int], None] | None = None,
) -> GateVerdict:
    """Never raises for the candidate's faults: a server that does not start is a failed verdict."""
    target = load_target(job.target_root)
    server = CandidateServer(target, job.workdir, job.log_dir, "server", on_start=on_start, on_stop=on_stop)
    try:
        with server:
            if job.gate is GateName.ACCURACY:
                return accuracy_gate(target, server, job.commit, job.log_dir)
            if job.gate is GateName.PROBES:
                return probe_gate(target, server, job)
            return benchmark_gate(target, server, job.commit, job.log_dir, job.bench_lock)
    except (ServerNotReady, CommandNotRunnable) as e:
        return GateVerdict(gate=job.gate, passed=False, commit=job.commit, reason=str(e), command=server.argv)


def probe_gate(target: Target, server: CandidateServer, job: GateJob) -> GateVerdict:
    """Fresh inputs the candidate has never seen, answered all at once, compared with the reference."""
    spec = target.spec.probes
    started, t0 = time.time(), time.monotonic()
    common = {"gate": GateName.PROBES, "commit": job.commit, "started_at": started}
    if spec.kind == "command":
        report_path = job.log_dir / "probes.json"
        argv = target.render(spec.command, url=server.url, port=server.port, report=report_path, seed=job.probe_seed)
        done = run(argv, target.root, job.log_dir, "probes", spec.timeout_s, env=clean_env())
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        passed = done.returncode == 0 and not done.timed_out
        reason = "" if passed else (f"the probe command timed out after {spec.timeout_s:.0f} s" if done.timed_out
                                    else f"the probe command failed (exit {done.returncode}):\n{done.tail(2000)}")
        return GateVerdict(**common, passed=passed, reason=reason, report=report, command=argv,
                           wall_s=time.monotonic() - t0)
    assert job.probes_file is not None, "an openai-completions probe gate needs its probes file"
    # Only the answers are collected here; the framework compares them with the reference after the
    # candidate has stopped, so no expected output exists anywhere while the candidate runs.
    requests = [json.loads(line) for line in job.probes_file.read_text().splitlines() if line.strip()]
    answers = ask_all(server.url, requests, timeout=spec.timeout_s)
    return GateVerdict(**common, passed=True, report={"answers": [{"text": t, "error": e} for t, e in answers]},
                       command=[f"{len(requests)} probe requests to {server.url}"], wall_s=time.monotonic() - t0)


def main(argv: list[str]) -> int:
    """``python -m vibeserve.gates.session JOB.json VERDICT.json``: exit 0 once the verdict is written."""
    if len(argv) != 2:
        print("usage: python -m vibeserve.gates.session JOB.json VERDICT.json", file=sys.stderr)
        return 2
    job = GateJob.model_validate_json(Path(argv[0]).read_text())
    verdict = run_gate_session(job)
    Path(argv[1]).write_text(verdict.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
