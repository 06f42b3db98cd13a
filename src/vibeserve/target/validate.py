"""``vibeserve validate``: run on the seed what a run runs in round 0, before any agent is paid for.

The same gates, the same way: each in a gate session under the run's sandbox (or ``--sandbox none``), the
candidate confined and limited as in a run, the probe gate with fresh probes compared with the reference,
the benchmark with its warm-up, one timed repeat and the output audit. Paths a command names that the
sandbox will hide are named first; long steps say they are still running.
"""

from __future__ import annotations

import json
import shlex
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from vibeserve.errors import TargetError
from vibeserve.gates.deterministic import gates_in_order, run_gate
from vibeserve.gates.session import GateJob, run_gate_session, run_sandboxed
from vibeserve.jail import CandidateJail, candidate_jail
from vibeserve.loop.setup import ensure_artifacts
from vibeserve.process import CommandNotRunnable, clean_env, run
from vibeserve.sandbox import Sandbox, SandboxMode, toolchain
from vibeserve.target.spec import Target, load_target
from vibeserve.types import GateName, GateVerdict

LLM_SAMPLE = [
    {"id": "validate-1", "kind": "completion", "prompt": "The quick brown fox", "max_tokens": 4},
    {"id": "validate-2", "kind": "chat", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 4},
]
VALIDATE_SEED = 7  # the probes and audit sample of a validation (a run draws a secret one)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class Validation:
    target: Target
    checks: list[Check] = field(default_factory=list)


@contextmanager
def still_running(what: str, log: Callable[[str], None], every_s: float = 15.0) -> Iterator[None]:
    """Say every ``every_s`` seconds that ``what`` is still running, so a long step is never silent."""
    stop, t0 = threading.Event(), time.monotonic()

    def beat() -> None:
        while not stop.wait(every_s):
            log(f"..  {what}: still running ({time.monotonic() - t0:.0f} s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def hidden_paths(target: Target, sandbox: Sandbox) -> list[tuple[str, str]]:
    """Absolute paths in the target's commands that the sandbox will hide from the command using them."""
    if not sandbox.active:
        return []
    spec = target.spec
    seen_by_candidate = [*toolchain(), target.root, *target.artifact_paths().values()]
    commands = {"deliverable.start": (spec.deliverable.start, True), "accuracy.command": (spec.accuracy.command, False),
                "benchmark.command": (spec.benchmark.command, False), "probes.command": (spec.probes.command, False)}
    problems = []
    for key, (argv, candidate) in commands.items():
        for arg in argv:
            for word in [arg, *arg.split("=", 1)[1:]]:
                path = Path(word)
                if not path.is_absolute() or "{" in word or not path.exists():
                    continue
                path = path.resolve()
                if candidate and not any(path.is_relative_to(p) for p in seen_by_candidate):
                    problems.append((key, f"{word} is outside the target, so the candidate's sandbox hides it; "
                                          "declare it under [artifacts] and write {artifacts.NAME} instead"))
                elif not candidate and path.is_relative_to("/tmp") and not path.is_relative_to(target.root):
                    problems.append((key, f"{word} is under /tmp, which the gate sandbox replaces with a private "
                                          "one; move it into the target or declare it under [artifacts]"))
    return problems


def validate_target(root: Path, log: Callable[[str], None] = print,
                    sandbox_mode: SandboxMode | str = SandboxMode.BWRAP) -> Validation:
    """Schema, paths and placeholders; then the reference, and every gate on the seed as round 0 runs it.

    Raises ``TargetError`` naming file, key and expectation at the first problem that stops a run.
    """
    target = load_target(root)
    result = Validation(target)
    file = str(target.file)

    def done(name: str, detail: str, t0: float) -> None:
        result.checks.append(Check(name, True, detail, time.monotonic() - t0))
        log(f"ok  {name}: {detail}")

    done("target.toml", "schema, paths and placeholders", time.monotonic())
    t0 = time.monotonic()
    sandbox = Sandbox(sandbox_mode)
    sandbox.check()
    problems = hidden_paths(target, sandbox)
    if problems:
        raise TargetError(file, *problems[0], more=problems[1:])
    done("sandbox", f"{sandbox.mode}: the gates run as in a run" if sandbox.active else
         "none: the gates run without isolation, as --sandbox none does", t0)
    tmp = Path(tempfile.mkdtemp(prefix="vibeserve-validate-"))
    try:
        t0 = time.monotonic()
        if ensure_artifacts(target, tmp):
            done("setup", "built the missing artifacts", t0)
        _reference(target, tmp, log, done)
        if target.seed_dir is None:
            log("--  seed: none (the run starts from an empty deliverable); the gates were not run")
            return result
        _gates(target, sandbox, tmp, log, done)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _reference(target: Target, tmp: Path, log: Callable[[str], None], done: Callable) -> None:
    file, ref = str(target.file), target.spec.reference
    t0 = time.monotonic()
    if ref.sample_input:
        inp = target.path(ref.sample_input)
    elif target.spec.probes.kind == "openai-completions":
        inp = tmp / "reference-in.jsonl"
        inp.write_text("".join(json.dumps(r) + "\n" for r in LLM_SAMPLE))
    else:
        log("--  reference: not run here (set [reference].sample_input to exercise it)")
        return
    out = tmp / "reference-out.jsonl"
    argv = target.render(ref.command, input=inp, output=out)
    log(f"..  reference: {shlex.join(argv)}")
    try:
        with still_running("reference", log):
            ran = run(argv, target.root, tmp, "reference", ref.timeout_s, env=clean_env())
    except CommandNotRunnable as e:
        raise TargetError(file, "reference.command", str(e)) from None
    if ran.timed_out or ran.returncode != 0:
        why = "timed out" if ran.timed_out else f"exit {ran.returncode}"
        raise TargetError(file, "reference.command", f"failed on {inp.name} ({why}):\n{ran.tail()}")
    if not out.is_file() or not out.read_text().strip():
        raise TargetError(file, "reference.command", "ran but wrote nothing to {output}")
    done("reference", f"answered {len(out.read_text().splitlines())} inputs", t0)


def _gates(target: Target, sandbox: Sandbox, tmp: Path, log: Callable[[str], None], done: Callable) -> None:
    file = str(target.file)
    # One timed repeat (with the target's warm-up): enough to show the benchmark and its audit work.
    bench = target.spec.benchmark.model_copy(update={"repeats": 1})
    single = Target(target.root, target.spec.model_copy(update={"benchmark": bench}))
    run_dir = tmp / "run"
    box = Sandbox.for_run(sandbox.mode, run_dir, target.root, target.artifact_paths().values())
    jail: CandidateJail = candidate_jail(box, target, run_dir)
    session = partial(run_sandboxed, sandbox=box) if box.active else run_gate_session
    for gate in [*gates_in_order(target), GateName.BENCHMARK]:
        t0 = time.monotonic()
        log(f"..  {gate}: starting the seed and running the {gate} gate")
        job = GateJob(gate=gate, target_root=target.root, workdir=target.seed_dir, log_dir=run_dir / "logs" / str(gate),
                      commit="seed", round=0, jail=jail)
        with still_running(f"{gate} gate", log):
            verdict = run_gate(single, gate, job, session, VALIDATE_SEED, 1, run_dir / "reference-cache",
                               run_dir / ".benchmark.lock")
        if not verdict.passed:
            raise TargetError(file, _key_of(verdict), _failure(verdict))
        done(str(gate), _summary(single, verdict), t0)
        for warning in verdict.warnings:
            log(f"!!  {gate}: {warning}")


def _key_of(verdict: GateVerdict) -> str:
    if verdict.reason.startswith("the deliverable"):
        return "deliverable.start"
    if "output audit" in verdict.reason or verdict.reason.startswith("probes:"):
        return "reference.command"  # the seed and the reference disagree: one of them is wrong
    return "benchmark" if verdict.gate is GateName.BENCHMARK else f"{verdict.gate}.command"


def _failure(verdict: GateVerdict) -> str:
    what = {"accuracy": "the checker does not pass the seed", "probes": "the seed's answers to fresh probes differ "
            "from the reference", "benchmark": "the benchmark does not measure the seed"}[str(verdict.gate)]
    if verdict.target_error:
        what = "the checker failed"
    tail = f"\n{verdict.detail.strip()[-1500:]}" if verdict.detail.strip() else ""
    return f"{what}: {verdict.reason}{tail}"


def _summary(target: Target, verdict: GateVerdict) -> str:
    # "equal" under the default exact comparator; "match" under a declared tolerance ([comparator])
    same = "equal" if target.spec.comparator.kind == "exact" else f"match ({target.spec.comparator.kind} comparator)"
    if verdict.gate is GateName.ACCURACY:
        return "the checker passes the seed"
    if verdict.gate is GateName.PROBES:
        total = verdict.report.get("total")
        return f"{total}/{total} fresh probes {same} the reference" if total else "the probe command passes the seed"
    spec = target.spec.benchmark
    audit = verdict.report.get("audit") or {}
    said = f"{spec.metric} = {verdict.metric:.4g} {spec.unit}".rstrip()
    for o in spec.objectives:
        values = (verdict.report.get("objectives") or {}).get(o.metric) or []
        if values:
            said += f", {o.metric} = {statistics.median(values):.4g} {o.unit}".rstrip()
    if audit:
        said += f"; output audit {audit.get('checked')}/{audit.get('of')} answers {same} the reference"
    return said
