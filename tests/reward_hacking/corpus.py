"""Runs corpus candidates through the deterministic gates (accuracy checker, probes, benchmark with its
output audit) of a private tiny-llama copy, exactly as a round runs them; no judge takes part."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

from vibeserve.gates.deterministic import evaluate
from vibeserve.gates.session import run_gate_session, run_sandboxed
from vibeserve.jail import candidate_jail
from vibeserve.sandbox import Sandbox
from vibeserve.target.spec import load_target

from .kit import Candidate, copy_target, seed_tree

RUN_SEED = 20261125  # any value: the candidates never see it


def judge(cand: Candidate, run_dir: Path, sandbox: str = "none") -> dict[str, Any]:
    """One candidate's verdicts; every candidate of a corpus run shares ``run_dir`` (earlier reports and
    reference outputs stay on disk there, as they do in a real run). With ``sandbox="bwrap"`` each gate
    session runs isolated, as in a default run."""
    # A hack may write its target: each gets its own copy, beside the run directory as a real target is.
    target_root = copy_target(run_dir.parent / f"{run_dir.name}-targets" / cand.name)
    tree = seed_tree(run_dir / "trees" / cand.name)
    cand.build(tree, target_root)
    target = load_target(target_root)
    box = Sandbox.for_run(sandbox, run_dir, target_root, target.artifact_paths().values())
    session = partial(run_sandboxed, sandbox=box) if box.active else run_gate_session
    t0 = time.monotonic()
    # The candidate is confined as in a run (its own sandbox, or unshare under --sandbox none).
    verdicts = evaluate(target, tree, run_dir / "logs" / cand.name, cand.name, run_dir / ".benchmark.lock",
                        RUN_SEED, cache_dir=run_dir / "reference-cache", session=session,
                        jail=candidate_jail(box, target, run_dir))
    last = verdicts[-1]
    return {
        "name": cand.name, "kind": cand.kind, "honest": cand.honest, "accepted": last.passed,
        "rejected_by": None if last.passed else str(last.gate) if "output audit" not in last.reason else "audit",
        "reason": last.reason.splitlines()[0] if last.reason else "",
        "gate_seconds": {str(v.gate): round(v.wall_s, 2) for v in verdicts},
        "audit_seconds": (last.report.get("audit") or {}).get("seconds") if last.passed else None,
        "seconds": round(time.monotonic() - t0, 2),
    }
