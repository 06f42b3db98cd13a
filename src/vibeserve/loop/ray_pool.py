"""``RayPool``: a parallel run's agents and gates as Ray tasks (``--ray ADDRESS``, or ``--ray local``).

Agents run anywhere (they ask for no CPU: they mostly wait on a model API); a gate asks for what the
target's ``[hardware]`` names (``gate_resources``, else a GPU on cuda/rocm, else a CPU), so Ray places it
on a node that has that free. Every node must see the run directory and the target at the same paths (one
machine, or a shared filesystem), since worktrees, the run store and the reference cache are files there.
The engine's ``GateScheduler`` still grants the slots, so a benchmark runs alone wherever it lands.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vibeserve.errors import VibeserveError
from vibeserve.gates.deterministic import run_gate
from vibeserve.gates.session import GateJob, run_gate_session, run_sandboxed
from vibeserve.harness import Harness
from vibeserve.sandbox import Sandbox
from vibeserve.target.spec import Target
from vibeserve.types import AgentCall, AgentResult, GateName, GateVerdict

log = logging.getLogger(__name__)


def _agent(harness: Harness, call: AgentCall) -> AgentResult:
    return harness.run(call)


def _gate(target: Target, gate: GateName, job: GateJob, sandbox: Sandbox | None, run_seed: int, attempt: int,
          cache_dir: Path, bench_lock: Path) -> GateVerdict:
    def session(j: GateJob) -> GateVerdict:
        # The candidate's process group lives and dies inside this task (the session stops it in all cases).
        if sandbox is not None and sandbox.active:
            return run_sandboxed(j, sandbox)
        return run_gate_session(j)

    return run_gate(target, gate, job, session, run_seed, attempt, cache_dir, bench_lock)


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

    def __init__(self, address: str, gate_resources: dict[str, float], sandbox: Sandbox | None):
        try:
            import ray
        except ImportError:
            raise VibeserveError("--ray needs Ray, which is not installed here: pip install 'vibeserve[ray]' "
                                 "(or leave out --ray to run on the local pool)") from None
        self.ray, self.sandbox = ray, sandbox
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
                                              bench_lock))

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
