"""The control arm (``vibeserve baseline``): a wall-clock budget spent on a search over a stock engine's
settings, with no agent, every trial through the same gates as a candidate, recorded as a run of its own.

Rounds, in order: the seed deliverable ``[baseline].seed_runs`` times (round 0 sets the baseline; the
others make best-of-N of the seed), then one trial per round: the sampler picks a setting, the setting is
committed as ``baseline-trial.json`` on the seed (so every trial is a commit and the run branch points at
the best one), the stock engine is started with it in place of the target's ``[deliverable]``, and the
accuracy, probe and benchmark gates (with the output audit) judge it. Kept and accepted follow the same
gain rule as an agent run. The run stops before a round once the budget (``--budget-h``, ``--trials``) is
spent or the space is used up; a trial in flight finishes.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vibeserve.errors import StoreError, TargetError, Terminated, VibeserveError
from vibeserve.gates.objectives import decide, rules_of, values_of
from vibeserve.gates.probes import audits
from vibeserve.jail import candidate_jail
from vibeserve.loop.config import _benchmark_info
from vibeserve.loop.round import RoundEnv, gates_in_order, run_gates
from vibeserve.loop.search import make_sampler
from vibeserve.loop.setup import ensure_artifacts
from vibeserve.process import clean_env, stop_children
from vibeserve.sandbox import Sandbox, SandboxMode
from vibeserve.store import RunStore, steering
from vibeserve.store.lock import RunLock
from vibeserve.target.manifest import build_manifest
from vibeserve.target.search_space import Engine, Value, with_values
from vibeserve.target.spec import Deliverable, Target, load_target
from vibeserve.types import GateName, GateVerdict, RoundResult, RoundStatus, Task
from vibeserve.workspace import Workspace

POLICY = steering.CONTROL_ARM
TRIAL_FILE = "baseline-trial.json"


def create_baseline_run(runs_dir: Path, target_dir: Path, run_id: str, budget_h: float, trials: int | None,
                        sandbox: SandboxMode, engine: str | None = None, seed_runs: int | None = None) -> Path:
    """Make ``runs_dir/<id>`` with its store; refuses a target without ``[baseline]``, an engine it does not
    name or whose ``check`` fails, and a run id in use."""
    target = load_target(target_dir)
    if target.spec.baseline is None:
        raise TargetError(str(target.file), "baseline", "no [baseline] table: add the stock engine's start command "
                          "and the settings to search (docs/baseline.md)")
    try:
        chosen = target.spec.baseline.engine(engine)
    except KeyError as e:
        raise TargetError(str(target.file), "baseline.engines", e.args[0]) from None
    if budget_h <= 0 or (trials is not None and trials < 0) or (seed_runs is not None and seed_runs < 1):
        raise VibeserveError("--budget-h must be above 0, --trials at least 0 and --seed-runs at least 1")
    Sandbox(sandbox).check()  # fails closed, before the run exists
    run_dir = runs_dir.resolve() / run_id
    if (run_dir / RunStore.FILE).exists():
        raise StoreError(f"a run {run_id!r} already exists in {runs_dir}; choose another --run-id")
    check_engine(target, chosen, "baseline" if engine is None else f"baseline.engines.{engine}")
    ensure_artifacts(target, run_dir / "logs")
    config = {"run_id": run_id, "target": str(target.root), "policy": POLICY, "harness": "none",
              "secret_seed": secrets.randbits(62), "sandbox": str(sandbox), "benchmark": _benchmark_info(target),
              "baseline": {**target.spec.baseline.model_dump(mode="json"), "budget_h": budget_h, "trials": trials,
                           "engine": engine, "seed_runs": target.spec.baseline.seed_runs if seed_runs is None
                           else seed_runs}}
    store = RunStore.create(run_dir)
    store.init_run(run_id, str(target.root), POLICY, config, build_manifest(target))
    store.close()
    return run_dir


def check_engine(target: Target, engine: Engine, where: str) -> None:
    """Run the engine's ``check`` (in the target's directory); a failure says what it printed and what to do."""
    if engine.check is None:
        return
    argv = target.render(engine.check)
    try:
        done = subprocess.run(argv, cwd=target.root, env=clean_env(), capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TargetError(str(target.file), f"{where}.check", f"{' '.join(argv)} could not run: {e}") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip())[-800:] or f"exit {done.returncode}"
        raise TargetError(str(target.file), f"{where}.check", f"the engine cannot run here: {said}")


def engine_readable(target: Target, engine: Engine) -> list[Path]:
    """The engine's ``readable`` paths, relative ones from the target's directory."""
    return [(target.root / p).resolve() for p in target.render(engine.readable)]


class BaselineRun:
    """Drives one control-arm run from its store to the end of its budget."""

    def __init__(self, run_dir: Path, progress: Callable[[str], None] | None = None):
        self.dir = run_dir.resolve()
        self.store = RunStore.open(self.dir)
        self.lock = RunLock(self.dir).acquire()
        self.config: dict[str, Any] = json.loads(self.store.run()["config"])
        self.target = load_target(self.config["target"])
        assert self.target.spec.baseline is not None
        self.space = self.target.spec.baseline
        self.engine_name: str | None = self.config["baseline"].get("engine")
        self.engine = self.space.engine(self.engine_name)
        self.progress = progress or (lambda s: None)
        mode = SandboxMode(self.config["sandbox"])
        artifacts = [*self.target.artifact_paths().values(), *engine_readable(self.target, self.engine)]
        self.sandbox = Sandbox.for_run(mode, self.dir, self.target.root, artifacts)
        self.jail = candidate_jail(self.sandbox, self.target, self.dir)  # the seed's
        changed = self.engine.limits.model_dump(exclude_none=True) if self.engine.limits else None
        self.engine_jail = candidate_jail(self.sandbox, self.target, self.dir, changed)  # the stock engine's
        self.workspace = Workspace(self.dir)

    def close(self) -> None:
        self.store.close()
        self.lock.release()

    def run(self) -> str:
        """Run to the end of the budget; returns the stop reason. An interrupt stops everything, marks the run
        interrupted and propagates."""
        self.sandbox.check()
        try:
            reason = self._run()
        except (KeyboardInterrupt, Terminated):
            stop_children()
            self.store.update_run(status="interrupted", stop_reason="interrupted")
            raise
        except VibeserveError as e:
            self.store.update_run(status="failed", stop_reason=str(e), finished_at=time.time())
            raise
        self.store.update_run(status="finished", stop_reason=reason, finished_at=time.time())
        self.progress(f"baseline finished: {reason}")
        return reason

    def _run(self) -> str:
        started = time.monotonic()
        budget_s, trials = self.config["baseline"]["budget_h"] * 3600, self.config["baseline"]["trials"]
        seed = self.workspace.init(self.target.seed_dir)
        if self.target.spec.benchmark.audit_samples != 0 and not audits(self.target):
            self.progress("note: the benchmark command does not write {responses}, so answers are not audited")
        spec = self.target.spec.benchmark
        sampler = make_sampler(self.space.sampler, self.engine.params, self.config["secret_seed"] % 2**31,
                               spec.direction)
        seed_runs = self.config["baseline"]["seed_runs"] if self.target.seed_dir is not None else 0
        n, done = 0, 0
        while True:
            if n > 0 and time.monotonic() - started > budget_s:
                return f"wall-clock budget reached ({self.config['baseline']['budget_h']:g} h)"
            if n > 0 and steering.pause_requested(self.store) is not None:
                steering.mark_paused(self.store, n - 1)
                return "stopped at the user's request (`vibeserve pause`; a control arm does not resume)"
            if n < seed_runs:
                self._seed_run(n, seed, seed_runs)
            else:
                if trials is not None and done >= trials:
                    return f"trial budget reached ({trials} trials)"
                values = sampler.ask()
                if values is None:
                    return "search space used up: every setting was tried"
                sampler.tell(self._trial(n, seed, values))
                done += 1
            n += 1

    def _env(self, n: int, deliverable: Deliverable | None) -> RoundEnv:
        run = self.store.run_record()
        return RoundEnv(target=self.target, store=self.store, workspace=self.workspace, agents=None,  # type: ignore[arg-type]
                        logs=self.dir / "logs", bench_lock=self.dir.parent / ".benchmark.lock", prompt_context={},
                        best_metric=run.best_metric, progress=self.progress, run_seed=self.config["secret_seed"],
                        sandbox=self.sandbox, jail=self.jail if deliverable is None else self.engine_jail,
                       deliverable=deliverable)

    def _gates(self, env: RoundEnv, n: int, sha: str, workdir: Path) -> list[GateVerdict]:
        verdicts: list[GateVerdict] = []
        for gate in [*gates_in_order(self.target), GateName.BENCHMARK]:
            verdicts.append(run_gates(env, n, 1, sha, workdir, gate))
            if not verdicts[-1].passed:
                break
        return verdicts

    def _seed_run(self, n: int, seed: str, of: int) -> None:
        """The seed deliverable as it is; round 0 is the baseline, and a seed that fails it ends the run."""
        task = Task(start_commit=seed, brief="the seed deliverable", title="baseline" if n == 0 else
                    f"seed run {n + 1} of {of}")
        self.progress(f"round {n}: {task.title}")
        workdir = self.workspace.worktree(f"r{n:03d}", seed)
        self._begin(n, task, seed)
        self._record(n, task, seed, self._gates(self._env(n, None), n, seed, workdir))
        if n == 0 and self.store.run_record().baseline_metric is None:
            reason = self.store.round_record(0).reason if self.store.round_record(0) else ""  # type: ignore[union-attr]
            raise VibeserveError(f"the seed deliverable fails its gates, so there is nothing to compare with: {reason}")

    def _trial(self, n: int, seed: str, values: dict[str, Value]) -> float | None:
        """One setting of the stock engine through every gate; returns its metric, None if a gate failed it."""
        base = self.target.spec.deliverable
        argv = with_values(self.engine.start, values)
        deliverable = Deliverable(start=argv, ready_url=self.engine.ready_url or base.ready_url,
                                  ready_timeout_s=self.engine.ready_timeout_s or base.ready_timeout_s)
        said = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "as written"
        task = Task(start_commit=seed, brief=" ".join(argv), title=f"{self.engine_name or 'stock engine'}: {said}")
        self.progress(f"round {n}: {task.title}")
        workdir = self.workspace.worktree(f"r{n:03d}", seed)
        (workdir / TRIAL_FILE).write_text(json.dumps({"start": argv, "params": values}, indent=2) + "\n")
        sha = self.workspace.commit(workdir, f"baseline trial {n}: {said}")
        self._begin(n, task, sha)
        result = self._record(n, task, sha, self._gates(self._env(n, deliverable), n, sha, workdir))
        return result.metric

    def _begin(self, n: int, task: Task, sha: str) -> None:
        self.store.start_round(n)
        self.store.update_round(n, task=task.model_dump_json(), start_commit=task.start_commit, candidate=sha)

    def _record(self, n: int, task: Task, sha: str, verdicts: list[GateVerdict]) -> RoundResult:
        run, spec, last = self.store.run_record(), self.target.spec.benchmark, verdicts[-1]
        if not last.passed:
            status, reason, metric = RoundStatus.REJECTED, f"{last.gate} gate: {last.reason.splitlines()[0]}", None
        else:
            best = None if run.best_metric is None else {spec.metric: run.best_metric}
            kept, reason = decide(rules_of(spec.model_dump()), values_of(spec.metric, last.samples, last.report),
                                  best)
            status, metric = (RoundStatus.KEPT if kept else RoundStatus.ACCEPTED), last.metric
        result = RoundResult(round=n, task=task, status=status, candidate=sha, attempts=1, metric=metric,
                             verdicts=verdicts, reason=reason)
        self.store.update_round(n, status=str(status), metric=metric, attempts=1, result=result.model_dump_json(),
                                finished_at=time.time())
        if status is RoundStatus.KEPT:
            self.workspace.set_best(sha)
            self.store.update_run(best_commit=sha, best_metric=metric,
                                  **({"baseline_commit": sha, "baseline_metric": metric} if n == 0 else {}))
        self.workspace.remove_worktree(f"r{n:03d}")
        shown = "-" if metric is None else f"{metric:.4g}"
        self.progress(f"round {n}: {status} {shown} {reason}".rstrip())
        return result
