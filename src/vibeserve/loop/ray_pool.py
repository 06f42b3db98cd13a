"""``RayPool``: a parallel run's agents and gates as Ray tasks (``--ray ADDRESS``, or ``--ray local``).

Agents run anywhere (they ask for no CPU: they mostly wait on a model API); a gate asks for what the
target's ``[hardware]`` names (``gate_resources``, else a GPU on cuda/rocm, else a CPU), so Ray places it
on a node that has that free. Every node must see the run directory and the target at the same paths (one
machine, or a shared filesystem), since worktrees, the run store and the reference cache are files there.
The engine's ``GateScheduler`` still grants the slots, so a benchmark runs alone wherever it lands.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
from pathlib import Path
from typing import Any

from vibeserve.errors import VibeserveError
from vibeserve.gates.deterministic import run_gate
from vibeserve.gates.session import GateJob, run_gate_session, run_sandboxed
from vibeserve.harness import Harness
from vibeserve.sandbox import Sandbox
from vibeserve.store import RunStore
from vibeserve.target.spec import Target
from vibeserve.types import AgentCall, AgentResult, GateName, GateVerdict

log = logging.getLogger(__name__)


def _agent(harness: Harness, call: AgentCall) -> AgentResult:
    return harness.run(call)


def host_tag() -> str:
    """How a process group recorded by a Ray task names the machine it runs on."""
    return f"[host={socket.gethostname()}]"


def _gate(target: Target, gate: GateName, job: GateJob, sandbox: Sandbox | None, run_seed: int, attempt: int,
          cache_dir: Path, bench_lock: Path, run_dir: Path | None = None) -> GateVerdict:
    # The session stops the candidate's process group in all cases; the group is recorded in the run store
    # (with the host it runs on) while it lives, so that if the run's process and its Ray workers are killed
    # with -9, resume on that host stops what they left behind.
    stores: list[RunStore] = []

    def on_start(pgid: int) -> None:
        try:
            stores.append(stores[0] if stores else RunStore.open(run_dir))  # type: ignore[arg-type]
            stores[0].add_process(pgid, f"r{job.round}/a{attempt}/{gate} in a Ray task {host_tag()}")
        except (VibeserveError, sqlite3.Error, OSError, TypeError) as e:
            log.warning("a Ray gate could not record its process group in the run store: %s", e)

    def on_stop(pgid: int) -> None:
        if stores:
            stores[0].remove_process(pgid)

    def session(j: GateJob) -> GateVerdict:
        if sandbox is not None and sandbox.active:
            return run_sandboxed(j, sandbox, on_start=on_start, on_stop=on_stop)
        return run_gate_session(j, on_start=on_start, on_stop=on_stop)

    try:
        return run_gate(target, gate, job, session, run_seed, attempt, cache_dir, bench_lock)
    finally:
        for store in stores[:1]:
            store.close()


def ray_options(resources: dict[str, float]) -> dict[str, Any]:
    """Ray task options for a gate's resources: CPU and GPU by their own keywords, the rest as custom."""
    options: dict[str, Any] = {"num_cpus": resources.get("CPU", 0), "max_retries": 0}
    if "GPU" in resources:
        options["num_gpus"] = resources["GPU"]
    custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU")}
    if custom:
        options["resources"] = custom
    return options


class RayPool:
    """Connects to (or, for ``local``, starts) a Ray instance and runs agent calls and gates there."""

    def __init__(self, address: str, gate_resources: dict[str, float], sandbox: Sandbox | None,
                 run_dir: Path | None = None):
        try:
            import ray
        except ImportError:
            raise VibeserveError("--ray needs Ray, which is not installed here: pip install 'vibeserve[ray]' "
                                 "(or leave out --ray to run on the local pool)") from None
        self.ray, self.sandbox, self.run_dir = ray, sandbox, run_dir
        self.started = not ray.is_initialized()  # a caller that set Ray up itself keeps it
        try:
            if self.started:
                ray.init(address=None if address == "local" else address, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
        except Exception as e:  # noqa: BLE001 - Ray raises many kinds; the user needs the address and the cause
            raise VibeserveError(f"--ray {address}: cannot connect to a Ray cluster ({' '.join(str(e).split())[:300]});"
                                 " start one with `ray start --head`, or use --ray local") from None
        have = ray.cluster_resources()
        missing = {k: v for k, v in gate_resources.items() if have.get(k, 0) < v}
        if missing:
            self.close()
            raise VibeserveError(f"--ray {address}: no node offers what one gate needs ({missing}; the cluster has "
                                 f"{ {k: v for k, v in have.items() if not k.startswith('node:')} }); change "
                                 "[hardware].gate_resources in target.toml or add such a node")
        self._agent = ray.remote(num_cpus=0, max_retries=0)(_agent)
        self._gate = ray.remote(**ray_options(gate_resources))(_gate)

    def run_agent(self, harness: Harness, call: AgentCall) -> AgentResult:
        return self.ray.get(self._agent.remote(harness, call))

    def run_gate(self, target: Target, gate: GateName, job: GateJob, _session: Any, run_seed: int, attempt: int,
                 cache_dir: Path, bench_lock: Path) -> GateVerdict:
        """``run_gate`` as a Ray task; the session runs there, so the local one is not used."""
        return self.ray.get(self._gate.remote(target, gate, job, self.sandbox, run_seed, attempt, cache_dir,
                                              bench_lock, self.run_dir))

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
