"""How a candidate server is started: in its bwrap sandbox, or, under ``--sandbox none``, confined as far as
the kernel allows without bwrap.

``CandidateJail`` is plain data (a gate session carries it into its sandbox) that turns the deliverable's
command into the command that runs it confined, and knows its limits.

Without bwrap, ``unshare`` (util-linux) still gives the candidate its own PID namespace, so no descendant
outlives its gate (a ``setsid`` daemon included), and its own mount namespace, in which this module's
``main`` makes the run directory, the reference cache and the target read-only and then drops every
capability before it runs the candidate: it can neither write them nor undo the read-only mounts. Where
even that is impossible (no user namespaces for a non-root user) the candidate runs unconfined, and the
run says so.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from vibeserve.limits import CandidateLimits
from vibeserve.sandbox import Sandbox, SandboxMode

if TYPE_CHECKING:
    from vibeserve.target.spec import Target

MODULE = "vibeserve.jail"


class CandidateJail(BaseModel):
    """How to start one candidate; the same object in process and inside a judge's sandbox."""

    model_config = ConfigDict(extra="forbid")
    mode: SandboxMode
    bwrap: str = "bwrap"
    readable: list[Path] = []  # bwrap: what the candidate may read besides the toolchain and its tree
    protect: list[Path] = []  # none: made read-only for the candidate
    unshare: bool = False  # none: whether util-linux unshare can confine here
    limits: CandidateLimits = CandidateLimits()

    def argv(self, argv: list[str], tree: Path) -> list[str]:
        if self.mode is SandboxMode.BWRAP:
            return Sandbox(self.mode, readable=self.readable, binary=self.bwrap).candidate_argv(
                argv, tree, self.limits.tmp_mb)
        if not self.unshare:
            return list(argv)
        user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        ro = [a for p in self.protect if p.exists() for a in ("--ro", str(p))]
        return ["unshare", *user, "--pid", "--fork", "--kill-child", "--mount", "--mount-proc",
                "--propagation", "private", "--", sys.executable, "-P", "-m", MODULE, *ro, "--", *argv]

    @property
    def confined(self) -> bool:
        return self.mode is SandboxMode.BWRAP or self.unshare


def candidate_jail(sandbox: Sandbox, target: Target, run_dir: Path, changed_limits: dict | None = None) -> CandidateJail:
    """How a run confines and limits its candidates (``changed_limits``: ``[limits]`` keys set otherwise)."""
    spec = target.spec.limits.model_copy(update=changed_limits or {})
    limits = CandidateLimits.from_spec(spec, target.spec.hardware.backend)
    artifacts = list(target.artifact_paths().values())
    if sandbox.active:  # what the run's sandboxes may read: the target, its artifacts, a stock engine's folders
        readable = [*sandbox.readable, *(p for p in [target.root, *artifacts] if p not in sandbox.readable)]
        return CandidateJail(mode=sandbox.mode, bwrap=sandbox.binary, readable=readable, limits=limits)
    # Without bwrap: the runs directory (stores, logs, reference caches, the benchmark lock) and the target
    # are read-only for the candidate, where unshare can do that.
    return CandidateJail(mode=sandbox.mode, unshare=unshare_works(), limits=limits,
                         protect=[run_dir.parent, target.root, *artifacts])


def unshare_works() -> bool:
    """Whether ``unshare`` can give a candidate its own PID and mount namespace here (checked once per run)."""
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        return False
    jail = CandidateJail(mode=SandboxMode.NONE, unshare=True)
    try:
        done = subprocess.run(jail.argv(["true"], Path("/")), capture_output=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def main(argv: list[str]) -> int:
    """``python -P -m vibeserve.jail [--ro PATH]... -- COMMAND...``, as PID 1 of a fresh namespace."""
    if "--" not in argv:
        print(f"usage: python -P -m {MODULE} [--ro PATH]... -- COMMAND...", file=sys.stderr)
        return 2
    split = argv.index("--")
    opts, command = argv[:split], argv[split + 1:]
    protect = [opts[i + 1] for i, a in enumerate(opts) if a == "--ro"]
    for path in protect:
        for mount in (["--bind", path, path], ["-o", "remount,bind,ro", path]):
            done = subprocess.run(["mount", *mount], capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{MODULE}: cannot make {path} read-only: {done.stderr.strip()}", file=sys.stderr)
                return 125
    # No capabilities after exec (the bounding set is empty), and no setuid way back.
    confined = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", "--", *command]
    child = os.fork()
    if child == 0:
        try:
            os.execvp(confined[0], confined)
        finally:
            os._exit(127)
    # PID 1 of the namespace: pass on a stop, reap orphans, and end with the candidate (which ends the rest).
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(child, s))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        if pid == child:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
