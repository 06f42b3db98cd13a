"""The outer loop: set up a run, measure the seed, then ask the policy for a task each round until a budget ends it."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vibeserve.errors import BudgetExceeded, DiskFull, StoreError, TargetError, Terminated, VibeserveError
from vibeserve.gates import improves
from vibeserve.gates.objectives import decide, medians, rules_of, values_of
from vibeserve.gates.paired import has_interval
from vibeserve.gates.probes import audits
from vibeserve.jail import candidate_jail
from vibeserve.loop.agents import AgentFailed, AgentRunner
from vibeserve.loop.budget import stop_reason, working_seconds
from vibeserve.loop.config import RunConfig, build_harnesses
from vibeserve.loop.parallel import ParallelRounds
from vibeserve.loop.policy_context import PolicyCtx
from vibeserve.loop.ray_pool import host_tag
from vibeserve.loop.round import RoundEnv, gates_in_order, run_gates, run_round
from vibeserve.loop.scheduler import GateScheduler
from vibeserve.loop.setup import ensure_artifacts
from vibeserve.policies import make_policy
from vibeserve.process import group_alive, kill_group, stop_children
from vibeserve.sandbox import Sandbox, SandboxMode
from vibeserve.store import RunStore, steering
from vibeserve.store.lock import RunLock
from vibeserve.target.manifest import build_manifest, diff_manifest, fingerprint
from vibeserve.target.spec import load_target
from vibeserve.types import GateName, RoundResult, RoundStatus, Task
from vibeserve.workspace import BEST_BRANCH, Workspace

log = logging.getLogger(__name__)


class StopRun(Exception):
    """The run ends here, for the reason given; nothing recorded is lost."""


class Engine:
    """Drives one run from its store; ``run()`` is the same call for a new run and for ``resume``.

    ``sandbox`` overrides the run's recorded sandbox mode (``resume --sandbox``), and is recorded.
    """

    paused = False  # set when a `vibeserve pause` request ends the rounds

    def __init__(self, run_dir: Path, progress: Callable[[str], None] | None = None,
                 sandbox: SandboxMode | str | None = None, accept_target_change: bool = False):
        self.dir = run_dir = run_dir.resolve()
        self.store = RunStore.open(run_dir)  # refuses a store that is not ours before the lock file is made
        self.lock = RunLock(run_dir).acquire()  # one owner per run, for this process's whole life
        try:
            self._setup(sandbox, accept_target_change, progress)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if getattr(self, "pool", None) is not None:
            self.pool.close()
        self.store.close()
        self.lock.release()

    def _setup(self, sandbox: SandboxMode | str | None, accept_target_change: bool,
               progress: Callable[[str], None] | None) -> None:
        run_dir = self.dir
        row = self.store.run()
        self.config = RunConfig.model_validate(json.loads(row["config"]))
        if sandbox is not None and SandboxMode(sandbox) != self.config.sandbox:
            self.config = self.config.model_copy(update={"sandbox": SandboxMode(sandbox)})
            self.store.update_run(config=json.dumps(self.config.model_dump(mode="json")))
        self.target = load_target(self.config.target)
        artifacts = list(self.target.artifact_paths().values())
        self.sandbox = Sandbox.for_run(self.config.sandbox, run_dir, self.target.root, artifacts)
        self.jail = candidate_jail(self.sandbox, self.target, run_dir)
        self.progress = progress or (lambda s: None)
        self.manifest = self.store.manifest()
        if accept_target_change and (now := build_manifest(self.target)) != self.manifest:
            changes = diff_manifest(self.manifest, now)
            self.store.replace_manifest(now)
            self.manifest = now
            self.progress(f"target change accepted and recorded: {'; '.join(changes[:5])}")
        self._fingerprint: dict | None = None
        self.workspace = Workspace(run_dir)
        self.policy = make_policy(self.config.policy, self.store, self.config.policy_options)
        budget = self.target.spec.budget
        self.abort = threading.Event()  # set on an interrupt: rounds in flight record nothing more
        self.scheduler = GateScheduler(self.target.spec.hardware.concurrent_checks)
        harnesses, models = build_harnesses(self.config, self.sandbox)
        self.pool = None
        if self.config.ray is not None:
            from vibeserve.loop.ray_pool import RayPool

            self.pool = RayPool(self.config.ray, self.target.spec.hardware.resources(), self.sandbox, self.dir)
        self.agents = AgentRunner(
            self.store, harnesses, models, self.policy, budget.agent_timeout_s, budget.max_cost_usd,
            self.config.schema_retries,
            on_call=lambda key, role, r: self.progress(
                f"  {key}: {r.exit_reason} in {r.wall_s:.1f}s" + (f" ({' '.join(r.error.split())[:300]})"
                                                                  if r.error else "")),
            say=self.progress, abort=self.abort, dispatch=self.pool.run_agent if self.pool else None,
        )

    # -- checks --------------------------------------------------------------------------------------
    def check_manifest(self) -> None:
        """Refuse to go on if the target's files changed since the run started.

        The full hash runs when nothing is known yet or a file's size or mtime moved; before each round
        that cheap fingerprint is all it costs.
        """
        now = fingerprint(self.target)
        if now == self._fingerprint:
            return
        current = build_manifest(self.target)
        if current != self.manifest:
            changes = diff_manifest(self.manifest, current)
            raise TargetError(str(self.target.root), "artifacts",
                              "the target's files changed since the run started (" + "; ".join(changes[:5]) +
                              f"); restore them, or keep them with `vibeserve resume {self.dir.name} "
                              "--accept-target-change` (numbers measured before the change stay as they were)")
        self._fingerprint = now

    def kill_leftovers(self) -> None:
        """Process groups a killed run left behind (a server mid-gate) are stopped before anything starts."""
        here = host_tag()
        for row in self.store.processes():
            if "[host=" in row["what"] and here not in row["what"]:
                log.warning("process group %s (%s) is on another host; stop it there", row["pgid"], row["what"])
            elif group_alive(row["pgid"]):
                log.warning("stopping leftover process group %s (%s)", row["pgid"], row["what"])
                kill_group(row["pgid"])
            self.store.remove_process(row["pgid"])

    def restore_best_ref(self) -> None:
        """The run branch is a ref in the run repo; if it went missing, put it back from the store."""
        row = self.store.run()
        if not (self.workspace.repo / ".git").exists() or self.workspace.has_best():
            return
        recorded = row["best_commit"] or row["baseline_commit"]
        if recorded is None or not self.workspace.has_commit(recorded):
            raise StoreError(f"{self.workspace.repo}: the run branch {BEST_BRANCH} is missing and the commit the "
                             "store records for it is not in the repo either; the run repo is damaged (restore it "
                             "from a backup, or start a new run); nothing was changed")
        self.workspace.set_best(recorded)
        self.progress(f"warning: the run branch {BEST_BRANCH} was missing; restored it at {recorded[:10]} from "
                      "the run store")

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> str:
        """Run (or continue) to the end; returns the stop reason. An interrupt (KeyboardInterrupt,
        ``Terminated``) stops every process of the run, marks it interrupted and propagates."""
        self.sandbox.check()  # before anything: a resumed run fails closed too
        row = self.store.run()
        if row["status"] == "finished":
            self.progress(f"run {row['id']} already finished ({row['stop_reason']}); nothing to resume")
            return row["stop_reason"]
        try:
            return self._run()
        except (KeyboardInterrupt, Terminated) as e:
            self.abort.set()
            stop_children()  # agents and gate sessions that rounds in flight started, each a process group
            self.kill_leftovers()
            self.store.update_run(status="interrupted", stop_reason=f"interrupted ({_signal_name(e)})")
            raise

    def _run(self) -> str:
        started = time.monotonic() - working_seconds(self.store)  # earlier sessions count
        if not self.sandbox.active:
            confined = ("candidates get their own PID namespace and a read-only view of the run, reference cache "
                        "and target" if self.jail.confined else "candidates are not confined at all here")
            self.progress(f"warning: sandbox none, as asked: agents run without isolation and {confined}; the "
                          "numbers of this run are not protected from the candidates")
        self.check_manifest()
        self.kill_leftovers()  # the lock says no other process owns the run: whatever is listed is left over
        ensure_artifacts(self.target, self.dir / "logs")
        self.restore_best_ref()
        self.store.update_run(status="running", stop_reason="")
        steering.mark_paused(self.store, None)  # a pause asked of an earlier process ended with that process
        if self.target.spec.benchmark.audit_samples != 0 and not audits(self.target):
            # Said out loud rather than skipped in silence.
            self.progress("note: the benchmark command does not write {responses}, so its answers are not "
                          "audited against the reference (add the placeholder to [benchmark].command)")
        try:
            self._baseline()
            reason = self._rounds(started)
        except (StopRun, BudgetExceeded) as e:
            reason = str(e)
        except DiskFull:
            raise  # nothing can be written now; the run resumes where it stopped once there is room
        except VibeserveError as e:
            self.store.update_run(status="failed", stop_reason=str(e), finished_at=time.time())
            raise
        if self.paused:
            steering.mark_paused(self.store, max(r["round"] for r in self.store.rounds()))
            self.store.update_run(status="paused", stop_reason=reason)
            self.progress(f"run paused; continue with `vibeserve resume {self.dir.name}`")
            return reason
        self.store.update_run(status="finished", stop_reason=reason, finished_at=time.time())
        self.progress(f"run finished: {reason}")
        return reason

    def _env(self, n: int) -> RoundEnv:
        return RoundEnv(
            target=self.target, store=self.store, workspace=self.workspace, agents=self.agents,
            logs=self.dir / "logs", bench_lock=self.dir.parent / ".benchmark.lock",
            prompt_context=self.prompt_context(n), best_metric=self.store.run_record().best_metric,
            best_values=self.best_values(), best_commit=self.store.run_record().best_commit,
            progress=self.progress, run_seed=self.config.secret_seed or 0, sandbox=self.sandbox, jail=self.jail,
            skill_dirs=tuple(Path(p) for p in self.config.skills), admit=self._admit(n),
            gate_slot=self.scheduler.slot, abort=self.abort,
            **({"gate_runner": self.pool.run_gate} if self.pool else {}),
        )

    def _admit(self, n: int) -> Callable[[str], str | None] | None:
        """The policy's admission check for round ``n``, against the rounds its task was chosen from."""
        admit = getattr(self.policy, "admit", None)
        if admit is None:
            return None
        upto = n - self.config.parallel
        return lambda diff: admit(diff, upto_round=upto)

    def _baseline(self) -> None:
        """Round 0: the seed deliverable through the same gates; its metric is the line to beat."""
        seed = self.workspace.init(self.target.seed_dir)
        row = self.store.run()
        if row["baseline_commit"] is not None:
            return
        self.store.start_round(0)
        task = Task(start_commit=seed, brief="the seed deliverable", title="baseline")
        self.store.update_round(0, task=task.model_dump_json(), start_commit=seed, candidate=seed)
        metric = None
        if self.target.seed_dir is not None:
            self.progress("round 0: measuring the seed")
            path = self.workspace.worktree("r000", seed)
            env = self._env(0)
            acc = run_gates(env, 0, 1, seed, path, GateName.ACCURACY)
            if not acc.passed:
                self.store.update_round(0, status=str(RoundStatus.FAILED), finished_at=time.time())
                raise StopRun(f"the seed deliverable fails the accuracy gate, so there is nothing to improve on: "
                              f"{acc.reason}")
            for gate in gates_in_order(self.target)[1:]:
                verdict = run_gates(env, 0, 1, seed, path, gate)
                if not verdict.passed:
                    self.store.update_round(0, status=str(RoundStatus.FAILED), finished_at=time.time())
                    raise StopRun(f"the seed deliverable fails the {gate} gate, so the target's [{gate}] settings "
                                  f"or its reference need fixing: {verdict.reason}")
            bench = run_gates(env, 0, 1, seed, path, GateName.BENCHMARK)
            if not bench.passed:
                self.store.update_round(0, status=str(RoundStatus.FAILED), finished_at=time.time())
                raise StopRun(f"the seed deliverable fails the benchmark gate: {bench.reason}")
            metric = bench.metric
            self.workspace.remove_worktree("r000")
        self.store.update_round(0, status=str(RoundStatus.KEPT), metric=metric, finished_at=time.time())
        self.store.update_run(baseline_commit=seed, baseline_metric=metric, best_commit=seed, best_metric=metric)
        self.progress(f"baseline: {self._fmt(metric)}")

    def _rounds(self, started: float) -> str:
        if self.config.parallel > 1 or self.pool is not None:
            return ParallelRounds(self, self.config.parallel).run(started)
        n = max([r["round"] for r in self.store.rounds()] + [0])
        last = self.store.round_record(n) if n else None
        if last is not None and last.status == RoundStatus.RUNNING:
            n -= 1  # the last round was interrupted: do it again from its journal
        elif last is not None and last.result is not None:
            # A kill between recording the round and its consequences (best ref, the policy's observe) must
            # not lose them; they are idempotent, so doing them again after a clean stop changes nothing.
            self._after(last.result)
        while True:
            if (reason := self._stop_reason(n, started)) is not None:
                return reason
            n += 1
            self.check_manifest()
            try:
                self._round(n)
            except BudgetExceeded as e:
                self._finish(self.budget_stopped(n, e))  # the round ends here, recorded as such
                raise

    def budget_stopped(self, n: int, e: BudgetExceeded) -> RoundResult:
        """Round ``n`` as the cost cap ended it: failed, with the cap's message, its task as recorded."""
        row = self.store.round_record(n)
        task = row.task if row is not None and row.task is not None else Task(start_commit=self.workspace.best(),
                                                                               brief="")
        return RoundResult(round=n, task=task, status=RoundStatus.FAILED, reason=f"stopped: {e}")

    def _stop_reason(self, n: int, started: float) -> str | None:
        """Why no round after round ``n`` may start (round budget, wall clock, plateau), or None."""
        budget = self.target.spec.budget
        total = self.config.rounds if self.config.rounds is not None else budget.rounds
        plateau = self.config.plateau if self.config.plateau is not None else budget.plateau_rounds
        reason = stop_reason(self.store, n, started, total, budget.max_wall_h, plateau)
        if reason is None and steering.pause_requested(self.store) is not None:
            self.paused = True
            return "paused at the user's request (`vibeserve pause`)"
        return reason

    def _round(self, n: int) -> None:
        row = self.store.round_record(n)
        if row is None or row.task is None:
            self.store.start_round(n)
            self.progress(f"round {n}: {self.policy.name} policy picks the task")
            ctx = PolicyCtx(self, n)
            try:
                task = self.policy.next_task(ctx)
            except AgentFailed as e:
                self._finish(RoundResult(round=n, task=Task(start_commit=self.workspace.best(), brief=""),
                                         status=RoundStatus.FAILED, reason=f"orchestrator: {e}"))
                return
            if task is None:
                raise StopRun("the policy has nothing left to try")
            task = steering.steered(task, steering.take_instructions(self.store, n))
            self.store.update_round(n, task=task.model_dump_json(), start_commit=task.start_commit)
        elif row.status != RoundStatus.RUNNING:
            assert row.result is not None  # a round is recorded finished with its result in one write
            self._after(row.result)  # finished; make sure the rest happened
            return
        else:
            task = row.task
        self.progress(f"round {n}: {task.title or task.brief[:60]}")
        result = run_round(self._env(n), n, task, self.target.spec.budget.retries_per_round)
        self._finish(result)

    def _finish(self, result: RoundResult) -> None:
        self.store.update_round(
            result.round, status=str(result.status), candidate=result.candidate, metric=result.metric,
            attempts=result.attempts, result=result.model_dump_json(), finished_at=time.time(),
        )
        self._after(result)
        self.progress(f"round {result.round}: {result.status} {self._fmt(result.metric)} {result.reason}".rstrip())

    def _after(self, result: RoundResult) -> None:
        """Idempotent consequences of a finished round: move the best ref, tell the policy, drop the worktree."""
        if result.status == RoundStatus.KEPT and result.candidate:
            run, spec = self.store.run_record(), self.target.spec.benchmark
            rules = rules_of(spec.model_dump())
            bench = next((v for v in reversed(result.verdicts) if v.gate == GateName.BENCHMARK and v.passed), None)
            # A paired keep, judged beside the best itself, moves it even if the best's older median is higher.
            paired = bench is not None and has_interval(bench.report) and \
                bench.report["paired"].get("best_commit") == run.best_commit
            better = paired or (improves(result.metric, run.best_metric, spec.direction) if len(rules) == 1 else
                                bench is not None and decide(rules, values_of(spec.metric, bench.samples, bench.report),
                                                             self.best_values())[0])
            if run.best_commit != result.candidate and better:
                self.workspace.set_best(result.candidate)
                self.store.update_run(best_commit=result.candidate, best_metric=result.metric)
        self.policy.observe(result)
        self.workspace.remove_worktree(f"r{result.round:03d}")

    def best_values(self) -> dict[str, float] | None:
        """The best's median on every objective, from its benchmark verdict; None before there is a best."""
        run, spec = self.store.run_record(), self.target.spec.benchmark
        if run.best_metric is None:
            return None
        found = next((g for g in reversed(self.store.gate_records()) if g.gate == GateName.BENCHMARK and g.passed
                      and g.commit == run.best_commit), None)
        values = medians(values_of(spec.metric, found.samples, found.report)) if found is not None else {}
        return {**values, spec.metric: run.best_metric}

    # -- what prompts share --------------------------------------------------------------------------
    def prompt_context(self, n: int) -> dict[str, Any]:
        run = self.store.run_record()
        history = []
        for r in self.store.round_records()[-8:]:
            if r.round == 0 or r.status == RoundStatus.RUNNING:
                continue
            history.append({"round": r.round, "status": r.status, "metric": r.metric,
                            "title": r.result.task.title if r.result else "",
                            "reason": r.result.reason if r.result else ""})
        return {
            "round": n, "target": self.target.spec, "instructions": self.target.instructions_text,
            "baseline_metric": run.baseline_metric, "best_metric": run.best_metric,
            "best_commit": run.best_commit, "history": history,
            "steering": [i.text for i in steering.pending_instructions(self.store)],
        }

    @staticmethod
    def _fmt(metric: float | None) -> str:
        return "-" if metric is None else f"{metric:.4g}"


def _signal_name(e: BaseException) -> str:
    return "SIGINT" if isinstance(e, KeyboardInterrupt) else signal.Signals(getattr(e, "signum", 15)).name
