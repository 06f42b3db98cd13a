"""One gate session: start the candidate, run one gate against it, stop it, return the verdict.

A session is described by a ``GateJob`` (plain data), so it can run in this process or, isolated, in a
child process (``python -m vibeserve.gates.session JOB.json VERDICT.json``) that sees only loopback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from vibeserve.gates.checks import accuracy_gate, benchmark_gate
from vibeserve.gates.server import CandidateServer, ServerNotReady
from vibeserve.process import CommandNotRunnable
from vibeserve.target.spec import load_target
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
    round: int = 0  # seeds the round's probe inputs
    run_seed: int = 0


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
            return benchmark_gate(target, server, job.commit, job.log_dir, job.bench_lock)
    except (ServerNotReady, CommandNotRunnable) as e:
        return GateVerdict(gate=job.gate, passed=False, commit=job.commit, reason=str(e), command=server.argv)


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
