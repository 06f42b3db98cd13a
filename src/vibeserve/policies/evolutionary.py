"""The evolutionary policy: pick a parent from the archive's cell elites, show inspirations, evolve.

Each round starts from a parent drawn from the archive (``selection.py``: softmax over baseline-normalized
metrics across MAP-Elites cells, with migration), shows the implementer the best and a few random other
candidates with their diffs summarized, and the latest failures with their feedback. Every attempt's
commit is archived (``archive.py``) with its metric, repeats, verdicts, reported techniques and feedback.
``admit`` refuses a diff that repeats an archived one before any gate runs.
"""

from __future__ import annotations

import json
import random

from pydantic import BaseModel, ConfigDict, Field

from vibeserve.gates.objectives import rules_of
from vibeserve.policies.archive import Archive, Candidate, changed_lines, near_duplicate, policy_seed
from vibeserve.policies.base import PolicyContext
from vibeserve.policies.evolutionary_mcp import server_spec
from vibeserve.policies.selection import frontier, score, select_inspirations, select_parent
from vibeserve.roles import render_brief
from vibeserve.store import RunStore
from vibeserve.types import GateName, McpServerSpec, Role, RoundResult, RoundStatus, Task
from vibeserve.workspace import Workspace

CRITERIA = ["answers still come from running the model and are as correct as before",
            "the change aims at the metric (speed), not at the checks"]
RECENT_FAILURES = 3


class EvolutionaryOptions(BaseModel):
    """The policy's knobs (``--policy-option KEY=VALUE`` or ``[policy_options]`` in a run config)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=0.25, gt=0, description="softmax temperature of parent selection")
    inspirations: int = Field(default=2, ge=0, le=8, description="random inspirations besides the best")
    similarity: float = Field(default=0.9, gt=0, le=1, description="Jaccard of changed lines that is a repeat")
    migrate_every: int = Field(default=5, ge=0, description="every N-th round the parent is the global best; 0: never")


class EvolutionaryPolicy:
    name = "evolutionary"
    snapshot_tables: tuple[str, ...] = ()  # its state is memory.md and tables no agent call changes

    def __init__(self, store: RunStore, options: EvolutionaryOptions | None = None):
        self.store = store
        self.options = options or EvolutionaryOptions()
        self.archive = Archive(store)
        self.workspace = Workspace(store.dir)
        config = json.loads(store.run()["config"])
        self.direction = config.get("benchmark", {}).get("direction", "max")
        self.rules = rules_of(config.get("benchmark", {}))
        self.seed = policy_seed(config.get("secret_seed") or 0, self.name)

    def mcp_servers(self, call_key: str, role: Role) -> list[McpServerSpec]:
        return [server_spec(self.store.dir, call_key)] if role == Role.IMPLEMENTER else []

    # -- choosing -----------------------------------------------------------------------------------
    def _baseline(self) -> Candidate:
        """The seed as the archive's first candidate (added once)."""
        run = self.store.run()
        found = self.archive.by_commit(run["baseline_commit"])
        if found is not None:
            return found
        bench = [g for g in self.store.gates(0) if g["gate"] == GateName.BENCHMARK and g["passed"]]
        seed = Candidate(round=0, attempt=1, commit=run["baseline_commit"], status="passed",
                         metric=run["baseline_metric"], samples=json.loads(bench[-1]["samples"]) if bench else [],
                         objectives=json.loads(bench[-1]["report"]).get("objectives", {}) if bench else {},
                         spread=bench[-1]["spread"] if bench else None, title="the seed deliverable",
                         verdicts=[{"gate": g["gate"], "passed": bool(g["passed"]), "reason": g["reason"]}
                                   for g in self.store.gates(0)])
        self.archive.put(seed)
        return seed

    def rng(self, n: int) -> random.Random:
        """Round ``n``'s random choices: the same for the same run seed, whatever happened before a restart."""
        return random.Random(self.seed * 1_000_003 + n)

    def next_task(self, ctx: PolicyContext) -> Task | None:
        baseline = self._baseline()
        cands = self.archive.candidates()
        rng = self.rng(ctx.round)
        front = frozenset(c.commit for c in frontier(cands, self.rules)) if len(self.rules) > 1 else frozenset()
        parent, why = select_parent(cands, baseline.metric, self.direction, self.options.temperature, rng,
                                    ctx.round, self.options.migrate_every, front)
        inspirations = select_inspirations(cands, parent, rng, self.options.inspirations, baseline.metric,
                                           self.direction)
        self.archive.record_selection(ctx.round, parent.commit, [c.commit for c in inspirations], why)
        failures = [c for c in cands if c.status != "passed"][-RECENT_FAILURES:]
        brief = render_brief(
            "evolutionary", parent=self._shown(parent, baseline), why=why,
            inspirations=[self._shown(c, baseline) for c in inspirations],
            failures=[self._shown(c, baseline) for c in failures],
        )
        return Task(start_commit=parent.commit, brief=brief, acceptance_criteria=CRITERIA,
                    title=f"Evolve {parent.label}")

    def _shown(self, c: Candidate, baseline: Candidate) -> dict:
        """What the brief says about a candidate: numbers, cell, summary, and its diff as --stat."""
        stat = self.workspace.diff_stat(c.parent, c.commit) if c.parent else ""
        return {"label": c.label, "commit": c.commit[:10], "metric": c.metric, "spread": c.spread,
                "gain": score(c, baseline.metric, self.direction) if c.metric is not None else None,
                "cell": c.cell, "summary": c.summary.strip() or c.title, "stat": stat.strip("\n"),
                "status": c.status, "feedback": c.feedback.strip()[:600]}

    # -- refusing repeats -----------------------------------------------------------------------------
    def admit(self, diff: str, upto_round: int | None = None) -> str | None:
        """Refuse (with the reason) a diff that repeats an archived candidate's, before any gate runs.

        With ``upto_round``, only candidates of rounds up to it count: a parallel run compares a round with
        the archive its task was chosen from, not with whatever rounds beside it happened to finish first."""
        cands = [c for c in self.archive.candidates() if upto_round is None or c.round <= upto_round]
        return near_duplicate(changed_lines(diff), cands, self.options.similarity)

    # -- learning -------------------------------------------------------------------------------------
    def observe(self, result: RoundResult) -> None:
        baseline = self._baseline()
        chosen = self.archive.selection(result.round)
        parent_sha, inspirations = chosen if chosen else (result.task.start_commit, [])
        parent = self.archive.by_commit(parent_sha) or baseline
        judge = self._judge_reasons(result.round)
        for attempt in range(1, result.attempts + 1):
            step = self.store.step(result.round, attempt, "candidate")
            if not step or not step.get("sha"):
                continue  # no commit: nothing was tried that could be archived
            sha = step["sha"]
            gates = [g for g in self.store.gates(result.round) if g["attempt"] == attempt]
            verdicts = [{"gate": g["gate"], "passed": bool(g["passed"]), "reason": g["reason"]} for g in gates]
            refused = (self.store.step(result.round, attempt, "admit") or {}).get("refused")
            failed_gate = next((g for g in gates if not g["passed"]), None)
            passed = (attempt == result.attempts and result.status in (RoundStatus.KEPT, RoundStatus.ACCEPTED)
                      and failed_gate is None)
            bench = next((g for g in gates if g["gate"] == GateName.BENCHMARK and g["passed"]), None)
            if refused:
                status, feedback = "refused", refused
            elif failed_gate is not None:
                status, feedback = "failed", f"{failed_gate['gate']} gate: {failed_gate['reason']}"
            elif passed:
                status, feedback = "passed", ""
            else:
                status = "failed"
                feedback = (f"judge: {judge[attempt]}" if attempt in judge else
                            result.reason if attempt == result.attempts else "the attempt did not finish")
            self.archive.put(Candidate(
                round=result.round, attempt=attempt, commit=sha, parent=parent.commit, inspirations=inspirations,
                status=status, metric=bench["metric"] if passed and bench else None,
                samples=json.loads(bench["samples"]) if passed and bench else [],
                objectives=json.loads(bench["report"]).get("objectives", {}) if passed and bench else {},
                spread=bench["spread"] if passed and bench else None, verdicts=verdicts,
                techniques=self.archive.techniques_of(f"r{result.round:03d}/a{attempt}/implementer")
                or parent.techniques,
                title=result.task.title, summary=step.get("summary", ""), feedback=feedback,
                changed_lines=changed_lines(self.workspace.diff(parent.commit, sha, max_chars=1_000_000)),
            ))

    def _judge_reasons(self, n: int) -> dict[int, str]:
        """Each attempt's judge rejection reasons in round ``n``, from the recorded judge replies."""
        out: dict[int, str] = {}
        for row in self.store.agent_calls():
            if row["round"] != n or row["role"] != Role.JUDGE or not row["reply"]:
                continue
            reply = json.loads(row["reply"])
            if not isinstance(reply, dict):
                continue
            # Calls come in the order made: a schema retry that passes clears what its first try said.
            if reply.get("verdict") != "pass" or reply.get("reward_hacking") or reply.get("criteria_met") is False:
                out[row["attempt"]] = str(reply.get("reasons", ""))
            else:
                out.pop(row["attempt"], None)
        return out
