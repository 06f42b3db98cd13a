"""The sandbox agents and candidates run in: bubblewrap (``bwrap``), or ``none`` when the user turns it off.

Both kinds of sandbox see the whole file system read-only, a private ``/tmp`` and their own PID namespace,
and die with the process that started them. The run directory is hidden from both (its store holds what
agents must not read, such as the run's seed), except the run repo and the tree they work on. An agent
writes only its worktree (whose ``.git`` entry stays read-only) and the per-call directories its harness
names; it keeps the host network, to reach its model API. A gate session (candidate server, checker,
benchmark) writes only its log directory and the benchmark lock, and has no network but loopback.
Killing the outer ``bwrap`` process group (``process.kill_group``) takes everything inside with it:
``--die-with-parent`` kills the namespace's init, and the kernel the rest.
"""

from __future__ import annotations

import enum
import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from vibeserve.errors import SandboxError

BWRAP_ENV = "VIBESERVE_BWRAP"  # the bwrap binary to use instead of the one on PATH
# Accelerators stay usable inside: a CUDA or ROCm candidate needs its device nodes.
DEVICE_GLOBS = ("/dev/nvidia*", "/dev/dri", "/dev/kfd")
INSTALL_HINT = (
    "install it with `apt-get install -y bubblewrap` (scripts/setup.sh does when run as root), "
    "or pass --sandbox none to run without isolation"
)


class SandboxMode(enum.StrEnum):
    BWRAP = "bwrap"
    NONE = "none"


class Sandbox:
    """Wraps agent and gate commands for one run; mode ``none`` hands every argv back unchanged."""

    def __init__(self, mode: SandboxMode | str = SandboxMode.BWRAP, visible: Iterable[Path] = (),
                 protect: Iterable[Path] = (), hidden: Iterable[Path] = (), binary: str | None = None):
        self.mode = SandboxMode(mode)
        # The private /tmp hides the host's; what the run needs from there is bound back, read-only.
        self.visible = [*(Path(p).resolve() for p in visible), *_own_paths()]
        # Kept read-only even where they lie under a writable bind (the target, the run store).
        self.protect = [Path(p).resolve() for p in protect]
        # Replaced by an empty tmpfs; what a command needs from inside is bound back.
        self.hidden = [Path(p).resolve() for p in hidden]
        self.binary = binary or os.environ.get(BWRAP_ENV) or shutil.which("bwrap") or "bwrap"

    @classmethod
    def for_run(cls, mode: SandboxMode | str, run_dir: Path, target_root: Path) -> Sandbox:
        """The sandbox of one run: its directory hidden, its repo and the target read-only."""
        return cls(mode, visible=[run_dir, target_root], protect=[target_root, run_dir / "repo"], hidden=[run_dir])

    @property
    def active(self) -> bool:
        return self.mode is SandboxMode.BWRAP

    def check(self) -> None:
        """Raise ``SandboxError`` unless bwrap runs here with the namespaces the gates need."""
        if not self.active:
            return
        argv = [*self._base([], [], []), "--unshare-net", "true"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        except OSError as e:
            raise SandboxError(f"bubblewrap (bwrap) is not installed or cannot run here ({self.binary}: "
                               f"{e.strerror}): {INSTALL_HINT}") from None
        except subprocess.TimeoutExpired:
            raise SandboxError(f"bubblewrap ({self.binary}) did not start a sandbox within 30 s: {INSTALL_HINT}") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip()[-500:] or f"exit {done.returncode}"
            raise SandboxError(f"bubblewrap (bwrap) cannot create namespaces here ({self.binary}: {said}): "
                               f"{INSTALL_HINT}")

    # -- argv ---------------------------------------------------------------------------------------
    def agent_argv(self, argv: Sequence[str], workdir: Path, writable: Iterable[Path] = ()) -> list[str]:
        """An agent command: ``workdir`` and ``writable`` (made if missing) writable, the host network kept."""
        if not self.active:
            return list(argv)
        workdir = Path(workdir).resolve()
        # The run repo stays in view, read-only, so git can read the worktree's history.
        shown = [*(h / "repo" for h in self.hidden)]
        args = self._base([workdir, *(Path(p).resolve() for p in writable)], [_install_root(argv[0])], shown)
        # A worktree's .git is a file pointing into the run repo; with it read-only, so is the history.
        dotgit = workdir / ".git"
        if dotgit.exists() or dotgit.is_symlink():
            args += ["--ro-bind", str(dotgit), str(dotgit)]
        return [*args, "--chdir", str(workdir), "--", *argv]

    def gate_argv(self, argv: Sequence[str], cwd: Path, writable: Iterable[Path] = ()) -> list[str]:
        """A gate session: only ``writable`` (made if missing) writable, no network but loopback."""
        if not self.active:
            return list(argv)
        cwd = Path(cwd).resolve()
        args = self._base([Path(p).resolve() for p in writable], [_install_root(argv[0])], [cwd])
        return [*args, "--unshare-net", "--chdir", str(cwd), "--", *argv]

    def _base(self, writable: list[Path], readable: list[Path], shown: list[Path]) -> list[str]:
        """Read-only root, devices, private /tmp; ``shown`` stays visible (read-only) inside a hidden path."""
        args = [self.binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        for pattern in DEVICE_GLOBS:
            for dev in sorted(glob.glob(pattern)):
                args += ["--dev-bind-try", dev, dev]
        bound: list[Path] = []
        for path in sorted({*self.visible, *readable}, key=lambda p: len(p.parts)):
            if path.is_relative_to(TMP) and path.exists() and not any(path.is_relative_to(b) for b in bound):
                bound.append(path)
                args += ["--ro-bind", str(path), str(path)]
        for path in self.hidden:
            if path.is_dir():
                args += ["--tmpfs", str(path)]
        for path in shown:
            if path.exists() and any(path.is_relative_to(h) for h in self.hidden):
                args += ["--ro-bind", str(path), str(path)]
        for path in writable:
            if not path.exists():
                path.mkdir(parents=True)
            args += ["--bind", str(path), str(path)]
        for path in self.protect:
            if path.exists() and any(path.is_relative_to(w) for w in writable):
                args += ["--ro-bind", str(path), str(path)]
        return [*args, "--unshare-pid", "--die-with-parent", "--new-session"]


TMP = Path("/tmp")


def _own_paths() -> list[Path]:
    """The interpreter and the vibeserve package: gate sessions and the MCP relay run them inside."""
    return [Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(__file__).resolve().parents[1]]


def _install_root(program: str) -> Path:
    """Where a program's files live: its ``node_modules`` for an npm CLI, else its directory."""
    path = Path(shutil.which(program) or program).resolve()
    if "node_modules" in path.parts:
        return Path(*path.parts[: path.parts.index("node_modules") + 1])
    return path.parent
