"""``vibeserve validate``: check a target end to end before any agent runs."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from vibeserve.errors import TargetError
from vibeserve.gates import CandidateServer, ServerNotReady, accuracy_gate, benchmark_gate
from vibeserve.loop.setup import ensure_artifacts
from vibeserve.process import CommandNotRunnable, clean_env, run
from vibeserve.target.spec import Target, load_target

LLM_SAMPLE = [
    {"id": "validate-1", "kind": "completion", "prompt": "The quick brown fox", "max_tokens": 4},
    {"id": "validate-2", "kind": "chat", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 4},
]


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


def _reference_input(target: Target, tmp: Path) -> Path | None:
    ref = target.spec.reference
    if ref.sample_input:
        return target.path(ref.sample_input)
    if target.spec.probes.kind == "openai-completions":
        path = tmp / "reference-in.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in LLM_SAMPLE))
        return path
    return None


def validate_target(root: Path, log=print) -> Validation:
    """Schema, paths and placeholders; then reference, checker and one benchmark run on the seed.

    Raises ``TargetError`` naming file, key and expectation at the first problem.
    """
    target = load_target(root)
    result = Validation(target)
    file = str(target.file)

    def done(name: str, detail: str, t0: float) -> None:
        result.checks.append(Check(name, True, detail, time.monotonic() - t0))
        log(f"ok  {name}: {detail}")

    done("target.toml", "schema, paths and placeholders", time.monotonic())
    with tempfile.TemporaryDirectory(prefix="vibeserve-validate-") as tmpdir:
        tmp = Path(tmpdir)
        t0 = time.monotonic()
        if ensure_artifacts(target, tmp):
            done("setup", "built the missing artifacts", t0)

        t0 = time.monotonic()
        inp = _reference_input(target, tmp)
        if inp is None:
            log("--  reference: not run (set [reference].sample_input to exercise it)")
        else:
            out = tmp / "reference-out.jsonl"
            argv = target.render(target.spec.reference.command, input=inp, output=out)
            try:
                ran = run(argv, target.root, tmp, "reference", target.spec.reference.timeout_s, env=clean_env())
            except CommandNotRunnable as e:
                raise TargetError(file, "reference.command", str(e)) from None
            if ran.timed_out or ran.returncode != 0:
                why = "timed out" if ran.timed_out else f"exit {ran.returncode}"
                raise TargetError(file, "reference.command", f"failed on {inp.name} ({why}):\n{ran.tail()}")
            if not out.is_file() or not out.read_text().strip():
                raise TargetError(file, "reference.command", "ran but wrote nothing to {output}")
            done("reference", f"answered {len(out.read_text().splitlines())} inputs", t0)

        if target.seed_dir is None:
            log("--  seed: none (the run starts from an empty deliverable); checker and benchmark not run")
            return result
        t0 = time.monotonic()
        server = CandidateServer(target, target.seed_dir, tmp, "seed-server")
        try:
            server.start()
        except (ServerNotReady, CommandNotRunnable) as e:
            server.stop()
            raise TargetError(file, "deliverable.start", f"the seed did not start: {e}") from None
        try:
            done("deliverable", f"seed ready at {server.url} in {server.startup_s:.1f} s", t0)
            t0 = time.monotonic()
            acc = accuracy_gate(target, server, "seed", tmp)
            if not acc.passed:
                raise TargetError(file, "accuracy.command", f"the checker does not pass the seed: {acc.reason}")
            done("accuracy", "the checker passes the seed", t0)
            t0 = time.monotonic()
            spec = target.spec.benchmark
            one = spec.model_copy(update={"repeats": 1, "warmup": 0})
            single = Target(target.root, target.spec.model_copy(update={"benchmark": one}))
            bench = benchmark_gate(single, server, "seed", tmp, tmp / "bench.lock")
            if not bench.passed:
                raise TargetError(file, "benchmark", bench.reason)
            done("benchmark", f"{spec.metric} = {bench.metric:.4g} {spec.unit}".rstrip(), t0)
        finally:
            server.stop()
    return result
