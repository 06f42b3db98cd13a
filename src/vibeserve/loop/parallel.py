"""Several rounds in flight: ``ParallelRounds`` runs up to ``--parallel N`` rounds at once, in order.

Determinism comes from three rules, so that a replayed run ends with the same archive every time:

- **When a task is chosen.** Round ``m``'s task is chosen right after round ``m - N`` is committed and
  before round ``m - N + 1`` is: the policy sees exactly the rounds up to ``m - N``, whatever is running.
  (The first ``N`` rounds are chosen from the baseline.) The round's prompts, the best metric it is told,
  and the archive its diff is checked against for repeats are fixed at that moment too.
- **How results are committed.** Rounds finish in any order, but are committed (round row finished, the
  policy's ``observe``, the best ref moved) strictly in round order, on the engine's thread. Whether an
  accepted candidate is *kept* is decided then, against the best as of the rounds before it.
- **When the run stops.** Stop conditions (round budget, plateau, wall clock) are checked before each new
  task is chosen; once one holds, no task is chosen again, rounds in flight still finish and are committed,
  and the reason is journaled so that a resumed run does not start new rounds either. The cost cap is met
  inside a round (before the agent call that would pass it): that round is committed as failed with the
  cap's message, and the run stops the same way, each round in flight ending at its next agent call.

Rounds run in worker threads (the agents and gate sessions they start are subprocesses; with ``--ray``
they run as Ray tasks instead); gates wait for a slot from the engine's ``GateScheduler``. Resume needs
nothing special: rounds journaled with a task are started again and skip every recorded step.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING

from vibeserve.errors import BudgetExceeded, VibeserveError
from vibeserve.gates.objectives import ObjectiveRule, decide, rules_of, values_of
from vibeserve.loop.agents import AgentFailed
from vibeserve.loop.round import run_round
from vibeserve.store import steering
from vibeserve.types import GateName, RoundResult, RoundStatus, Task

if TYPE_CHECKING:
    from vibeserve.loop.engine import Engine

STOPPED = "stopped"  # the journal step (round 0, attempt 0) holding why no more tasks are chosen


def check_parallel(policy: str, parallel: int, ray: str | None) -> None:
    """Refuse a parallel setting the run cannot honour, before the run exists."""
    if parallel < 1:
        raise VibeserveError(f"--parallel {parallel}: give at least 1 (the number of rounds in flight)")
    if parallel > 1 and policy != "evolutionary":
        raise VibeserveError(
            f"--parallel {parallel} needs --policy evolutionary: the {policy} policy decides each round from the "
            "one before it (its issues or memory.md), so its rounds cannot be in flight together; use "
            "--parallel 1 with it")
    if ray is not None and not ray.strip():
        raise VibeserveError("--ray needs an address (ray://HOST:10001, HOST:6379, auto) or 'local'")


def rejudge(result: RoundResult, best: dict[str, float] | None, rules: list[ObjectiveRule]) -> RoundResult:
    """Kept or accepted, decided against the best at commit time (the round may have been told an older one)."""
    if result.status not in (RoundStatus.KEPT, RoundStatus.ACCEPTED):
        return result
    bench = next((v for v in reversed(result.verdicts) if v.gate == GateName.BENCHMARK and v.passed), None)
    if bench is None:
        return result
    gained, why = decide(rules, values_of(rules[0].metric, bench.samples, bench.report), best)
    return result.model_copy(update={"status": RoundStatus.KEPT if gained else RoundStatus.ACCEPTED, "reason": why})


class ParallelRounds:
    """The engine's rounds with up to ``parallel`` in flight; ``run`` returns the stop reason."""

    def __init__(self, engine: Engine, parallel: int):
        self.engine, self.parallel = engine, parallel
        self.store = engine.store
        self.futures: dict[int, Future[RoundResult]] = {}
        self.budget_stop: str | None = None  # the cost cap's message, once a round met it

    def run(self, started: float) -> str:
        engine, store = self.engine, self.store
        committed = self._committed()
        last = store.round(committed) if committed else None
        if last is not None and last["result"]:
            # As in a serial run: a kill between committing a round and its consequences loses nothing.
            engine._after(RoundResult.model_validate_json(last["result"]))
        stop = (store.step(0, 0, STOPPED) or {}).get("reason")
        for row in store.rounds():
            if row["round"] > committed and row["task"] is not None:
                self._launch(row["round"], Task.model_validate_json(row["task"]))
        chosen = max([committed, *self.futures])
        while True:
            while stop is None and chosen < committed + self.parallel:
                stop = engine._stop_reason(chosen, started)
                if stop is not None:
                    if not engine.paused:  # a pause is not journaled: `resume` chooses new tasks again
                        store.record_step(0, 0, STOPPED, {"reason": stop, "after_round": committed})
                    break
                chosen += 1
                self._choose(chosen)
            if committed == chosen:
                return stop or "the policy has nothing left to try"
            committed += 1
            self._commit(committed)
            if stop is None and self.budget_stop is not None:
                stop = self.budget_stop
                store.record_step(0, 0, STOPPED, {"reason": stop, "after_round": committed})

    def _committed(self) -> int:
        """The last round committed: rounds are committed in order, so the finished ones are a prefix."""
        n = 0
        for row in self.store.rounds():
            if row["round"] == n + 1 and row["status"] != RoundStatus.RUNNING:
                n += 1
            elif row["round"] > n:
                break
        return n

    def _choose(self, n: int) -> None:
        """Ask the policy for round ``n``'s task (from the archive as committed now) and start the round."""
        engine = self.engine
        engine.check_manifest()
        store = self.store
        store.start_round(n)
        engine.progress(f"round {n}: {engine.policy.name} policy picks the task")
        from vibeserve.loop.engine import PolicyCtx, StopRun

        try:
            task = engine.policy.next_task(PolicyCtx(engine, n))
        except AgentFailed as e:
            task = Task(start_commit=engine.workspace.best(), brief="")
            store.update_round(n, task=task.model_dump_json(), start_commit=task.start_commit)
            self._done(n, RoundResult(round=n, task=task, status=RoundStatus.FAILED, reason=f"orchestrator: {e}"))
            return
        if task is None:
            raise StopRun("the policy has nothing left to try")
        task = steering.steered(task, steering.take_instructions(store, n))
        store.update_round(n, task=task.model_dump_json(), start_commit=task.start_commit)
        self._launch(n, task)

    def _launch(self, n: int, task: Task) -> None:
        engine = self.engine
        env = engine._env(n)  # the prompt context and best metric as of now: see the module's rules
        engine.progress(f"round {n}: {task.title or task.brief[:60]}")
        future: Future[RoundResult] = Future()
        self.futures[n] = future
        retries = engine.target.spec.budget.retries_per_round

        def work() -> None:
            try:
                future.set_result(run_round(env, n, task, retries))
            except BaseException as e:  # noqa: BLE001 - handed to the engine's thread, which raises it
                future.set_exception(e)

        # Daemon threads: an interrupted run exits without waiting for agents it has already stopped.
        threading.Thread(target=work, name=f"round-{n}", daemon=True).start()

    def _done(self, n: int, result: RoundResult) -> None:
        future: Future[RoundResult] = Future()
        future.set_result(result)
        self.futures[n] = future

    def _commit(self, n: int) -> None:
        """Wait for round ``n`` and commit it: its row, the policy's observe, the best ref (``Engine._finish``)."""
        try:
            result = self._wait(n)
        except BudgetExceeded as e:  # a stop like the others: no new task, the rounds in flight end and commit
            result = self.engine.budget_stopped(n, e)
            self.budget_stop = self.budget_stop or str(e)
        spec = self.engine.target.spec.benchmark
        result = rejudge(result, self.engine.best_values(), rules_of(spec.model_dump()))
        self.engine._finish(result)
        del self.futures[n]

    def _wait(self, n: int) -> RoundResult:
        """Round ``n``'s result, or its error; in short waits, so that a signal reaches this thread promptly."""
        future = self.futures[n]
        while True:
            try:
                return future.result(timeout=0.5)
            except TimeoutError:
                continue
