"""The deterministic gates, in order: accuracy checker, probes, benchmark with its output audit.

``run_gate`` runs one of them for one candidate; ``evaluate`` runs them all until one fails (what a round
does before and around the judge, used on its own by the reward-hacking corpus and its benchmark). No
LLM takes part in any of these verdicts.

Reference outputs for probes and audits are generated only after the candidate has stopped, so while a
candidate runs, the cache holds nothing about the inputs it is being checked on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from vibeserve.gates.checks import exclusive
from vibeserve.gates.comparators import judge
from vibeserve.gates.load import LoadMeter
from vibeserve.gates.probes import (
    audit_responses,
    audits,
    make_image_probes,
    make_probes,
    probes_from_requests,
    read_probe_requests,
    reference_outputs,
    round_seed,
    summarize,
)
from vibeserve.gates.session import GateJob, run_gate_session
from vibeserve.jail import CandidateJail
from vibeserve.limits import CandidateGroup
from vibeserve.sandbox import SandboxMode
from vibeserve.target.spec import Target
from vibeserve.types import GateName, GateVerdict

SessionRunner = Callable[[GateJob], GateVerdict]


def gates_in_order(target: Target) -> list[GateName]:
    """The deterministic gates a candidate passes before the judge sees it; the benchmark comes after."""
    return [GateName.ACCURACY] + ([GateName.PROBES] if target.spec.probes.kind != "none" else [])


def run_gate(
    target: Target, gate: GateName, job: GateJob, session: SessionRunner, run_seed: int, attempt: int,
    cache_dir: Path, bench_lock: Path,
) -> GateVerdict:
    """One gate for one candidate: probes are made before the session and compared after it; the
    benchmark's answers are audited after it. ``session`` runs the candidate's side (in process or isolated).

    The candidate gets a control group for the session where the machine allows (its limits, and no
    descendant outliving the gate); a benchmark session holds the machine's benchmark lock, here, where no
    candidate can reach it, and measures the machine's other work meanwhile.
    """
    t0 = time.monotonic()
    job.log_dir.mkdir(parents=True, exist_ok=True)
    probes: list[dict] = []
    if gate is GateName.PROBES:
        spec = target.spec.probes
        seed = round_seed(run_seed, job.round, f"probes-a{attempt}")
        if spec.kind in ("openai-completions", "openai-images"):
            if spec.kind == "openai-images":
                probes = make_image_probes(seed, spec.count)
            elif spec.requests:
                rows = read_probe_requests(target.path(spec.requests))
                probes = probes_from_requests(rows, seed, spec.count, spec.max_tokens)
            else:
                probes = make_probes(seed, spec.count, spec.max_tokens, spec.kinds)
            path = job.log_dir / "probes.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in probes))
            job = job.model_copy(update={"probes_file": path})
        else:
            job = job.model_copy(update={"probe_seed": seed % 2**31})
    # A paired benchmark's best gets a control group of its own: each server is held to the limits by itself.
    pair_group = CandidateGroup(job.jail.limits) if job.pair_workdir is not None else nullcontext(None)
    with CandidateGroup(job.jail.limits) as limits, pair_group as pair_limits:
        job = job.model_copy(update={"jail": job.jail.model_copy(update={"limits": limits}),
                                     "pair_cgroup": pair_limits.cgroup if pair_limits is not None else []})
        if gate is GateName.BENCHMARK:
            with exclusive(bench_lock), LoadMeter() as meter:
                verdict = session(job)
            warning = meter.warning(target.spec.benchmark.max_background_load)
            verdict = verdict.model_copy(update={"report": {**verdict.report, "load": meter.report()},
                                                 "warnings": [*verdict.warnings, *([warning] if warning else [])]})
        else:
            verdict = session(job)
    if probes and verdict.passed:
        verdict = _judge_probes(target, verdict, probes, cache_dir, job.log_dir)
    if gate is GateName.BENCHMARK and verdict.passed and audits(target):
        seed, started = round_seed(run_seed, job.round, f"audit-a{attempt}"), time.monotonic()
        result = audit_responses(target, job.log_dir, cache_dir, seed, target.spec.benchmark.audit_samples)
        result["seconds"] = round(time.monotonic() - started, 3)
        verdict = verdict.model_copy(update={"report": {**verdict.report, "audit": result}})
        if not result["passed"]:
            verdict = verdict.model_copy(update={"passed": False, "metric": None, "reason": result["reason"]})
    # The gate's time includes starting and stopping the server and the reference: none of it is ours.
    return verdict.model_copy(update={"wall_s": time.monotonic() - t0})


def _judge_probes(target: Target, verdict: GateVerdict, probes: list[dict], cache_dir: Path,
                  log_dir: Path) -> GateVerdict:
    answers = verdict.report.get("answers", [])
    expected = reference_outputs(target, probes, cache_dir, log_dir)
    results = judge(target, probes, expected,
                    [({k: v for k, v in a.items() if k != "error"}, a.get("error")) for a in answers], log_dir)
    passed, why = summarize(results)
    report = {"total": len(results), "failures": sum(r["status"] != "ok" for r in results), "probes": results}
    (log_dir / "probes.json").write_text(json.dumps({"passed": passed, **report, "requests": probes}, indent=2))
    return verdict.model_copy(update={"passed": passed, "reason": f"probes: {why}" if why else "", "report": report})


def evaluate(
    target: Target, workdir: Path, log_dir: Path, commit: str, bench_lock: Path, run_seed: int,
    round_no: int = 1, attempt: int = 1, cache_dir: Path | None = None, session: SessionRunner = run_gate_session,
    jail: CandidateJail | None = None,
) -> list[GateVerdict]:
    """Every deterministic gate in order until one fails; the last verdict decides."""
    verdicts = []
    for gate in [*gates_in_order(target), GateName.BENCHMARK]:
        job = GateJob(gate=gate, target_root=target.root, workdir=workdir, log_dir=log_dir / str(gate),
                      commit=commit, round=round_no, jail=jail or CandidateJail(mode=SandboxMode.NONE))
        verdicts.append(run_gate(target, gate, job, session, run_seed, attempt,
                                 cache_dir or log_dir / "reference-cache", bench_lock))
        if not verdicts[-1].passed:
            break
    return verdicts
