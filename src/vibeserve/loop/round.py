"""The inner loop: implementer, accuracy gate, judge, benchmark gate, evaluator, with retries.

Each step's outcome is journaled in the store before the next step starts, so a round interrupted at
any point resumes from its last finished step and never repeats an agent call or a recorded gate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vibeserve.errors import TargetError
from vibeserve.gates.deterministic import gates_in_order, run_gate
from vibeserve.gates.objectives import decide, rules_of, values_of
from vibeserve.gates.paired import has_interval, paired_keep
from vibeserve.gates.session import GateJob, run_gate_session, run_sandboxed
from vibeserve.gates.static import scan_diff
from vibeserve.jail import CandidateJail
from vibeserve.loop.agents import Aborted, AgentFailed, AgentRunner
from vibeserve.profiling import profile_mcp
from vibeserve.roles import EvaluatorReply, ImplementerReply, JudgeReply, render_prompt
from vibeserve.sandbox import Sandbox, SandboxMode
from vibeserve.skills.install import install_skills
from vibeserve.skills.selection import select_skills
from vibeserve.store import RunStore
from vibeserve.target.spec import Deliverable, Target
from vibeserve.types import GateName, GateVerdict, McpServerSpec, Role, RoundResult, RoundStatus, Task
from vibeserve.workspace import GitError, Workspace

log = logging.getLogger(__name__)


@dataclass
class RoundEnv:
    """Everything a round needs, handed in by the engine."""

    target: Target
    store: RunStore
    workspace: Workspace
    agents: AgentRunner
    logs: Path
    bench_lock: Path
    prompt_context: dict[str, Any]
    best_metric: float | None
    progress: Any = None  # callable(str) for user-facing progress, or None
    run_seed: int = 0  # with the round number, seeds the probe gate's fresh inputs
    sandbox: Sandbox | None = None  # None or mode "none": the gate session runs in this process
    jail: CandidateJail | None = None  # how candidates are confined and limited (None: not at all)
    skill_dirs: tuple[Path, ...] = ()  # the user's own skill folders, added to the bundled ones
    # The policy's check of a candidate's diff before any gate: a refusal reason, or None to go on.
    admit: Callable[[str], str | None] | None = None
    # Parallel runs: the scheduler's slot a gate holds while it runs (GateScheduler.slot), what runs a gate
    # (run_gate, or one that sends it to a Ray cluster), and the run's interrupt, after which nothing is
    # recorded (a killed gate or agent must not be journaled as the candidate's failure).
    gate_slot: Callable[[GateName], AbstractContextManager[Any]] | None = None
    gate_runner: Callable[..., GateVerdict] = run_gate
    abort: threading.Event | None = None
    # The best's median on every objective ([[benchmark.objectives]]); None: just ``best_metric``.
    best_values: dict[str, float] | None = None
    # The best's commit: a paired benchmark ([benchmark].paired) measures the candidate beside it.
    best_commit: str | None = None
    # A control-arm trial's stock engine ([baseline]), started in place of the target's [deliverable].
    deliverable: Deliverable | None = None

    def best(self) -> dict[str, float] | None:
        """The best's medians that a keep is judged against; None before there is a best."""
        if self.best_metric is None:
            return None
        return {**(self.best_values or {}), self.target.spec.benchmark.metric: self.best_metric}


def profiler(env: RoundEnv, n: int, attempt: int, role: Role, workdir: Path) -> list[McpServerSpec]:
    """The ``profile`` tool for one agent call of this attempt (``vibeserve.profiling``)."""
    return [profile_mcp.for_call(str(role), env.target.root, workdir, env.logs / f"r{n:03d}" / f"a{attempt}",
                                 env.bench_lock, env.sandbox, env.jail)]


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _say(env: RoundEnv, text: str) -> None:
    if env.progress:
        env.progress(text)


def run_gates(env: RoundEnv, n: int, attempt: int, sha: str, workdir: Path, gate: GateName) -> GateVerdict:
    """Start the candidate at ``workdir``, run one gate, stop it; the verdict is journaled with the gate row.

    In a sandbox the session is a child process group (recorded, so a resumed run kills a leftover one);
    without one it runs here and records the candidate server's group.
    """
    step = str(gate)
    recorded = env.store.step(n, attempt, step)
    if recorded is not None:
        return GateVerdict.model_validate(recorded)
    log_dir = env.logs / f"r{n:03d}" / f"a{attempt}" / step
    job = GateJob(gate=gate, target_root=env.target.root, workdir=workdir, log_dir=log_dir, commit=sha, round=n,
                  jail=env.jail or CandidateJail(mode=SandboxMode.NONE), deliverable=env.deliverable)
    pair = f"r{n:03d}-best"
    if gate is GateName.BENCHMARK and env.target.spec.benchmark.paired and env.best_commit not in (None, sha):
        assert env.best_commit is not None
        job = job.model_copy(update={"pair_workdir": env.workspace.worktree(pair, env.best_commit),
                                     "pair_commit": env.best_commit})

    def on_start(pgid: int) -> None:
        env.store.add_process(pgid, f"r{n}/a{attempt}/{step}")

    def session(job: GateJob) -> GateVerdict:
        if env.sandbox is not None and env.sandbox.active:
            return run_sandboxed(job, env.sandbox, on_start=on_start, on_stop=env.store.remove_process)
        return run_gate_session(job, on_start=on_start, on_stop=env.store.remove_process)

    with env.gate_slot(gate) if env.gate_slot else nullcontext() as held:
        try:
            verdict = env.gate_runner(env.target, gate, job, session, env.run_seed, attempt,
                                      env.logs.parent / "reference-cache", env.bench_lock)
        finally:
            if job.pair_workdir is not None:
                env.workspace.remove_worktree(pair)
    if env.abort is not None and env.abort.is_set():
        raise Aborted(f"round {n} attempt {attempt}: the run is being interrupted; the {gate} gate is not recorded")
    if held is not None:
        slot = {"queued_s": round(held.queued_s, 3), "held_from": held.held_from, "held_until": held.held_until}
        verdict = verdict.model_copy(update={"report": {**verdict.report, "slot": slot}})
    if verdict.target_error:
        # Not journaled as a step: once the target is fixed, a resumed run runs this gate again.
        env.store.record_gate(n, attempt, verdict)
        raise TargetError(str(env.target.file), f"{gate}.command", f"{verdict.reason} (round {n}, attempt "
                          f"{attempt}; the candidate was not blamed and no retry was spent)")
    env.store.record_gate(n, attempt, verdict, step=step)
    for warning in verdict.warnings:
        _say(env, f"  warning: {warning}")
    return verdict


def _admission(env: RoundEnv, n: int, attempt: int, start: str, sha: str) -> str | None:
    """The policy's refusal of this candidate's diff, if any; journaled, so resume asks it only once."""
    if env.admit is None:
        return None
    recorded = env.store.step(n, attempt, "admit")
    if recorded is None:
        recorded = {"refused": env.admit(env.workspace.diff(start, sha, max_chars=1_000_000))}
        env.store.record_step(n, attempt, "admit", recorded)
    return recorded["refused"]


def feedback_of(verdict: GateVerdict) -> str:
    """What the implementer is told about a failed gate: the reason, then the evidence."""
    text = f"The {verdict.gate} gate failed: {verdict.reason}"
    return f"{text}\n\n{verdict.detail.strip()}" if verdict.detail.strip() else text


def run_round(env: RoundEnv, n: int, task: Task, retries: int) -> RoundResult:
    """Drive one round to a ``RoundResult``; nothing recorded is done again."""
    ws, store = env.workspace, env.store
    name = f"r{n:03d}"
    workdir = ws.trees / name
    if store.step(n, 0, "worktree") is None or not workdir.exists():
        ws.worktree(name, task.start_commit)
        store.record_step(n, 0, "worktree", {"path": str(workdir), "start": task.start_commit})
    base, feedback = task.start_commit, ""
    verdicts: list[GateVerdict] = []
    candidate: str | None = None
    last_status, last_reason = RoundStatus.FAILED, "no attempt finished"
    ctx = env.prompt_context
    for attempt in range(1, retries + 1):
        _say(env, f"round {n} attempt {attempt}: implementer")
        cand = store.step(n, attempt, "candidate")
        if cand is None:
            if store.agent_call(f"{name}/a{attempt}/implementer") is None:
                ws.reset(workdir, base)
                install_skills(select_skills(env.target.spec, env.skill_dirs), workdir)
            # else: a kill came after the implementer's call was recorded and before its commit. The call
            # is not run again, so its edits are only in the worktree: commit them as they are.
            prompt = render_prompt(
                Role.IMPLEMENTER, **ctx, task=task, attempt=attempt, feedback=feedback, workdir=workdir,
                start_command=" ".join(env.target.spec.deliverable.start),
                artifacts={k: str(v) for k, v in env.target.artifact_paths().items()},
                target_root=env.target.root,
            )
            try:
                reply, _ = env.agents.ask(Role.IMPLEMENTER, f"{name}/a{attempt}/implementer", prompt, workdir, n, attempt,
                                          tools=profiler(env, n, attempt, Role.IMPLEMENTER, workdir))
            except AgentFailed as e:
                store.record_step(n, attempt, "candidate", {"sha": None, "error": str(e)})
                feedback, last_status, last_reason = f"Your previous attempt failed: {e}", RoundStatus.FAILED, str(e)
                continue
            assert isinstance(reply, ImplementerReply)
            try:
                sha = ws.commit(workdir, f"round {n} attempt {attempt}: {task.title or 'candidate'}\n\n{reply.summary}")
            except GitError as e:
                # Nothing an agent leaves in its worktree ends the run: the attempt fails, with the reason.
                why = f"the worktree could not be committed ({e}); remove what git cannot take in (a nested .git, unreadable files)"
                store.record_step(n, attempt, "candidate", {"sha": None, "error": why})
                feedback, last_status, last_reason = f"Your previous attempt failed: {why}", RoundStatus.FAILED, why
                continue
            cand = {"sha": sha, "summary": reply.summary}
            store.record_step(n, attempt, "candidate", cand)
        if cand["sha"] is None:
            feedback, last_status, last_reason = f"Your previous attempt failed: {cand['error']}", RoundStatus.FAILED, cand["error"]
            continue
        sha = candidate = base = cand["sha"]
        ws.reset(workdir, sha)
        if env.sandbox is None or not env.sandbox.active:
            _say(env, f"round {n} attempt {attempt}: warning: --sandbox none, so this candidate's numbers are not "
                      "protected from it")
        store.update_round(n, candidate=sha, attempts=attempt)

        refused = _admission(env, n, attempt, task.start_commit, sha)
        if refused:
            feedback = f"Your change was refused before any gate ran: {refused}"
            last_status, last_reason = RoundStatus.FAILED, f"refused: {first_line(refused)}"
            continue

        checked = []
        for gate in gates_in_order(env.target):
            _say(env, f"round {n} attempt {attempt}: {gate} gate")
            checked.append(run_gates(env, n, attempt, sha, workdir, gate))
            if not checked[-1].passed:
                break
        verdicts.extend(checked)
        if not checked[-1].passed:
            feedback = feedback_of(checked[-1])
            last_status, last_reason = RoundStatus.REJECTED, f"{checked[-1].gate} gate: {first_line(checked[-1].reason)}"
            continue

        _say(env, f"round {n} attempt {attempt}: judge")
        diff, changed = ws.diff(task.start_commit, sha), ws.changed_files(task.start_commit, sha)
        findings = [str(f) for f in scan_diff(diff, env.target, workdir, changed)]
        log_dir = env.logs / f"r{n:03d}" / f"a{attempt}"
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "static-findings.txt").write_text("".join(f + "\n" for f in findings))
        prompt = render_prompt(
            Role.JUDGE, **ctx, task=task, verdicts=checked, diff=diff, changed_files=changed,
            static_findings=findings,
        )
        try:
            judge, _ = env.agents.ask(Role.JUDGE, f"{name}/a{attempt}/judge", prompt, workdir, n, attempt)
        except AgentFailed as e:
            last_status, last_reason = RoundStatus.FAILED, str(e)
            break
        ws.reset(workdir, sha)
        assert isinstance(judge, JudgeReply)
        if judge.verdict != "pass" or judge.reward_hacking or not judge.criteria_met:
            # A "pass" that also says reward hacking, or unmet criteria, is not a pass.
            why = ("" if judge.verdict != "pass" else
                   "it answered pass but also reward_hacking = true; " if judge.reward_hacking else
                   "it answered pass but also criteria_met = false; ")
            feedback = f"The judge rejected your change: {why}{judge.reasons}"
            last_status, last_reason = RoundStatus.REJECTED, f"judge: {why}{first_line(judge.reasons)}"
            continue

        _say(env, f"round {n} attempt {attempt}: benchmark gate")
        bench = run_gates(env, n, attempt, sha, workdir, GateName.BENCHMARK)
        verdicts.append(bench)
        if not bench.passed:
            feedback = feedback_of(bench)
            last_status, last_reason = RoundStatus.REJECTED, f"benchmark gate: {first_line(bench.reason)}"
            continue

        _say(env, f"round {n} attempt {attempt}: evaluator")
        bspec = env.target.spec.benchmark
        rules, values = rules_of(bspec.model_dump()), values_of(bspec.metric, bench.samples, bench.report)
        best = env.best() or {}
        further = [{"metric": r.metric, "direction": r.direction, "band": r.band, "unit": r.unit,
                    "samples": values.get(r.metric, []), "best": best.get(r.metric)} for r in rules[1:]]
        prompt = render_prompt(
            Role.EVALUATOR, **ctx, task=task, metric=bench.metric, samples=bench.samples, spread=bench.spread,
            best_before=env.best_metric, baseline=ctx["baseline_metric"], repeats=bspec.repeats, workdir=workdir,
            objectives=further,
        )
        analysis, hints = "", []
        try:
            ev, _ = env.agents.ask(Role.EVALUATOR, f"{name}/a{attempt}/evaluator", prompt, workdir, n, attempt,
                                   tools=profiler(env, n, attempt, Role.EVALUATOR, workdir))
            assert isinstance(ev, EvaluatorReply)
            analysis, hints = ev.analysis, ev.hints
        except AgentFailed as e:
            analysis = f"(evaluator failed: {e})"  # the candidate stands; only the analysis is missing
        ws.reset(workdir, sha)
        if has_interval(bench.report):  # [benchmark].paired: the interval of the ratio to the best decides
            gained, why = paired_keep(bench.report["paired"], bspec.direction, bspec.min_gain)
        else:
            gained, why = decide(rules, values, env.best())
        return RoundResult(
            round=n, task=task, status=RoundStatus.KEPT if gained else RoundStatus.ACCEPTED, candidate=sha,
            attempts=attempt, metric=bench.metric, verdicts=verdicts, judge_reasons=judge.reasons,
            analysis=analysis, hints=hints,
            reason=why,
        )
    return RoundResult(
        round=n, task=task, status=last_status, candidate=candidate, attempts=retries, verdicts=verdicts,
        reason=last_reason,
    )
