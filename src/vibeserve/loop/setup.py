"""Build a target's missing artifacts (weights, converted checkpoints) with its ``[setup]`` command."""

from __future__ import annotations

from pathlib import Path

from vibeserve.errors import TargetError
from vibeserve.process import CommandNotRunnable, clean_env, run
from vibeserve.target.spec import Target


def ensure_artifacts(target: Target, log_dir: Path) -> bool:
    """Run ``[setup].command`` once if an artifact is missing; return whether it ran."""
    missing = target.missing_artifacts()
    if not missing:
        return False
    spec = target.spec.setup
    if spec is None:
        raise TargetError(str(target.file), f"artifacts.{missing[0]}",
                          f"path {target.spec.artifacts[missing[0]]!r} does not exist and there is no [setup] to build it")
    argv = target.render(spec.command)
    try:
        done = run(argv, target.root, log_dir, "setup", spec.timeout_s, env=clean_env())
    except CommandNotRunnable as e:
        raise TargetError(str(target.file), "setup.command", str(e)) from None
    if done.timed_out:
        raise TargetError(str(target.file), "setup.command", f"timed out after {spec.timeout_s:.0f} s")
    if done.returncode != 0:
        raise TargetError(str(target.file), "setup.command", f"failed with exit {done.returncode}:\n{done.tail()}")
    still = target.missing_artifacts()
    if still:
        raise TargetError(str(target.file), f"artifacts.{still[0]}", "the setup command ran but did not create it")
    return True
