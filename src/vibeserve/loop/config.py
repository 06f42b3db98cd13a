"""How a run is asked for (``RunConfig``, stored with the run so ``resume`` rebuilds the same parts), the
harnesses it builds, and ``create_run``, which makes the run's directory and store before the engine starts."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vibeserve.errors import StoreError
from vibeserve.harness import Harness, make_harness
from vibeserve.loop.parallel import check_parallel
from vibeserve.loop.setup import ensure_artifacts
from vibeserve.policies import POLICIES, check_policy_options
from vibeserve.sandbox import Sandbox, SandboxMode
from vibeserve.store import RunStore
from vibeserve.store.lock import RunBusy, describe, owner
from vibeserve.target.manifest import build_manifest
from vibeserve.target.spec import Target, load_target
from vibeserve.types import Role


class RoleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    harness: str | None = None
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class RunConfig(BaseModel):
    """How a run was asked for; stored with the run so ``resume`` rebuilds the same parts."""

    model_config = ConfigDict(extra="forbid")
    run_id: str
    target: str
    policy: str = "issue-tracker"
    policy_options: dict[str, Any] = Field(default_factory=dict)  # the policy's knobs (docs/policies.md)
    harness: str = "scripted"
    harness_options: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    roles: dict[Role, RoleConfig] = Field(default_factory=dict)
    rounds: int | None = None  # overrides [budget].rounds
    plateau: int | None = Field(default=None, ge=0)  # overrides [budget].plateau_rounds; 0: never stop on one
    schema_retries: int = Field(default=2, ge=0)
    benchmark: dict[str, Any] = Field(default_factory=dict)  # metric, direction, unit: for reports
    peers: list[dict[str, Any]] = Field(default_factory=list)  # [{name, metric}]: lines on the trajectory plot
    # Seeds the probe gate's inputs and the audit's samples; drawn when the run is created, never shown to
    # agents (set it only to reproduce a run's probes).
    secret_seed: int | None = None
    sandbox: SandboxMode = SandboxMode.BWRAP  # "none" only when the user asked for it
    skills: list[str] = Field(default_factory=list)  # the user's own skill folders (--skills)
    parallel: int = Field(default=1, ge=1)  # rounds in flight at once (--parallel; docs/policies.md)
    ray: str | None = None  # a Ray cluster's address, or "local" (--ray); None: the local pool

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, name: str) -> str:
        if name not in POLICIES:
            raise ValueError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}")
        return name


def build_harnesses(
    config: RunConfig, sandbox: Sandbox | None = None
) -> tuple[dict[Role, Harness], dict[Role, str | None]]:
    """Each role's harness and model; every harness is checked now, before any round (or run) starts."""
    harnesses: dict[Role, Harness] = {}
    models: dict[Role, str | None] = {}
    for role in Role:
        rc = config.roles.get(role, RoleConfig())
        name = rc.harness or config.harness
        # The run-wide options belong to the run-wide harness; a role on another harness gets only its own.
        options = rc.options if name != config.harness else {**config.harness_options, **rc.options}
        harnesses[role] = make_harness(name, sandbox, **options)
        models[role] = rc.model or config.model
    for h in {id(h): h for h in harnesses.values()}.values():
        h.check()
    return harnesses, models


def create_run(runs_dir: Path, config: RunConfig) -> Path:
    """Make ``runs_dir/<id>`` with its store and the target's manifest; the engine does the rest."""
    target = load_target(config.target)
    check_policy_options(config.policy, config.policy_options)
    check_parallel(config.policy, config.parallel, config.ray)
    build_harnesses(config)  # a missing CLI or unreadable trajectory is an error before the run exists
    Sandbox(config.sandbox).check()  # so is a sandbox that cannot start: it fails closed
    run_dir = runs_dir.resolve() / config.run_id
    if (run_dir / RunStore.FILE).exists():
        live = owner(run_dir)
        if live is not None:
            raise RunBusy(describe(live, config.run_id) + "; to start another run, choose another --run-id")
        raise StoreError(f"a run {config.run_id!r} already exists in {runs_dir}; choose another --run-id for a new "
                         f"run (`vibeserve resume {config.run_id}` continues that one)")
    ensure_artifacts(target, run_dir / "logs")
    config = config.model_copy(update={
        "target": str(target.root),
        "secret_seed": config.secret_seed if config.secret_seed is not None else secrets.randbits(62),
        "benchmark": _benchmark_info(target),
    })
    store = RunStore.create(run_dir)
    store.init_run(config.run_id, str(target.root), config.policy, config.model_dump(mode="json"),
                   build_manifest(target))
    store.close()
    return run_dir


def _benchmark_info(target: Target) -> dict[str, Any]:
    """What reports and policies read about the metric; with further objectives, their rules too."""
    spec = target.spec.benchmark
    info: dict[str, Any] = {k: getattr(spec, k) for k in ("metric", "direction", "unit")}
    if spec.objectives:
        info.update(min_gain=spec.min_gain, objectives=[o.model_dump() for o in spec.objectives])
    return info
