"""Where agents, judges and candidates run: bubblewrap (``bwrap``), or ``none`` when the user turns it off.

Three kinds of sandbox, one rule: a candidate, and the agent that wrote it, can never touch what judges it.

- **Agent**: sees only the toolchain (``/usr``, ``/etc`` less its secrets, the interpreter, the agent CLI),
  the read-only target, its worktree (writable; ``.git`` read-only), the run repo (read-only, for history)
  and its own harness's config directory. Its own user, PID and network namespace, no capabilities: its
  network reaches only its model endpoint and its MCP servers, through relays (``netrelay``, ``mcp_relay``).
- **Judge** (a gate session: the session runner, the target's checker and benchmark): the whole file system
  read-only, the run directory hidden but for its own log directory (writable) and the candidate's tree
  (read-only), a private ``/tmp``, and only loopback. It starts the candidate inside its own sandbox.
- **Candidate** (the deliverable): the toolchain and its tree and target read-only, a fresh private
  ``/tmp`` (its only writable place), no capabilities, its own user and PID namespace (it cannot see,
  signal or ptrace its judges), and the judge's loopback, which it serves on. Limits on memory, processes
  and file size come from ``[limits]`` (``vibeserve.limits``).

Killing a sandbox's process group takes everything inside with it: ``--die-with-parent`` kills the
namespace's init, and the kernel the rest. Mode ``none`` (see ``vibeserve.jail``) still gives candidates a
PID namespace and a read-only store, reference cache and target where the kernel allows it.
"""

from __future__ import annotations

import enum
import glob
import os
import shutil
import site
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from vibeserve.errors import SandboxError

BWRAP_ENV = "VIBESERVE_BWRAP"  # the bwrap binary to use instead of the one on PATH
# Accelerators stay usable inside: a CUDA or ROCm candidate needs its device nodes.
DEVICE_GLOBS = ("/dev/nvidia*", "/dev/dri", "/dev/kfd")
# What programs need to run: the system's directories. /home, /root, /srv, /mnt, /run, /var and /tmp stay out.
TOOLCHAIN = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/nix")
# Inside /etc: what no sandboxed program reads (password hashes, host keys), masked.
SECRETS = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers", "/etc/sudoers.d",
           "/etc/ssh", "/etc/ssl/private")
INSTALL_HINT = (
    "install it with `apt-get install -y bubblewrap` (scripts/setup.sh does when run as root), "
    "or pass --sandbox none to run without isolation"
)
# No capabilities, and no way back to them: a new user namespace would give a fresh set.
UNPRIVILEGED = ["--unshare-user", "--cap-drop", "ALL", "--disable-userns"]


class SandboxMode(enum.StrEnum):
    BWRAP = "bwrap"
    NONE = "none"


def toolchain() -> list[Path]:
    """The directories every sandboxed program needs to run: system, interpreter, packages, vibeserve."""
    paths = [Path(p) for p in TOOLCHAIN]
    paths += [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.executable).parent]
    paths += [Path(p) for p in site.getsitepackages()]
    paths.append(Path(__file__).resolve().parents[1])  # the package's root (an editable install's src)
    paths += [Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return _roots(p.resolve() for p in paths if p.exists())


def _roots(paths: Iterable[Path]) -> list[Path]:
    """``paths`` without those inside another one, shortest first."""
    out: list[Path] = []
    for p in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(p.is_relative_to(q) for q in out):
            out.append(p)
    return out


def install_root(program: str) -> Path:
    """Where a program's files live: its ``node_modules`` for an npm CLI, else its directory."""
    path = Path(shutil.which(program) or program).resolve()
    if "node_modules" in path.parts:
        return Path(*path.parts[: path.parts.index("node_modules") + 1])
    return path.parent


class Sandbox:
    """The sandboxes of one run; mode ``none`` hands agent and judge commands back unchanged."""

    def __init__(self, mode: SandboxMode | str = SandboxMode.BWRAP, run_dir: Path | None = None,
                 readable: Iterable[Path] = (), binary: str | None = None):
        self.mode = SandboxMode(mode)
        self.run_dir = Path(run_dir).resolve() if run_dir else None
        # The target and its artifacts: every sandbox reads them, none writes them.
        self.readable = [Path(p).resolve() for p in readable]
        self.binary = binary or os.environ.get(BWRAP_ENV) or shutil.which("bwrap") or "bwrap"

    @classmethod
    def for_run(cls, mode: SandboxMode | str, run_dir: Path, target_root: Path,
                artifacts: Iterable[Path] = ()) -> Sandbox:
        """The sandboxes of one run: its directory hidden, its target (and artifacts) read-only."""
        return cls(mode, run_dir, readable=[target_root, *artifacts])

    @property
    def active(self) -> bool:
        return self.mode is SandboxMode.BWRAP

    def check(self) -> None:
        """Raise ``SandboxError`` unless bwrap runs here with the namespaces the sandboxes need.

        A judge starts a candidate inside its own sandbox, so the check nests one in the other.
        """
        if not self.active:
            return
        tree = Path(sys.prefix)
        argv = self.judge_argv(self.candidate_argv(["true"], tree, tmp_mb=1), tree, [], [])
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        except OSError as e:
            raise SandboxError(f"bubblewrap (bwrap) is not installed or cannot run here ({self.binary}: "
                               f"{e.strerror}): {INSTALL_HINT}") from None
        except subprocess.TimeoutExpired:
            raise SandboxError(f"bubblewrap ({self.binary}) did not start a sandbox within 30 s: {INSTALL_HINT}") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip()[-500:] or f"exit {done.returncode}"
            raise SandboxError(f"bubblewrap (bwrap) cannot create the namespaces a run needs here ({self.binary}: "
                               f"{said}); unprivileged user namespaces must be allowed: {INSTALL_HINT}")

    # -- agents ----------------------------------------------------------------------------------------
    def agent_argv(self, argv: Sequence[str], workdir: Path, writable: Iterable[Path] = (),
                   readonly: Iterable[Path] = (), network: Sequence[str] = ()) -> list[str]:
        """An agent command: ``workdir`` and ``writable`` (made if missing) writable, ``readonly`` paths
        inside them kept read-only; no network but what ``network`` (a ``netrelay`` prefix) forwards."""
        if not self.active:
            return list(argv)
        workdir = Path(workdir).resolve()
        seen = [*self.readable, install_root(argv[0])]
        if self.run_dir is not None and (self.run_dir / "repo").is_dir():
            seen.append(self.run_dir / "repo")  # read-only: git reads the worktree's history there
        args = self._view(seen)
        args += self._writable([workdir, *(Path(p).resolve() for p in writable)])
        # A worktree's .git is a file pointing into the run repo; with it read-only, so is the history.
        keep = [workdir / ".git", *(Path(p).resolve() for p in readonly)]
        args += [a for p in keep if p.exists() or p.is_symlink() for a in ("--ro-bind", str(p), str(p))]
        args += [*UNPRIVILEGED, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--die-with-parent",
                 "--new-session", "--remount-ro", "/", "--chdir", str(workdir)]
        return [*args, "--", *network, *argv]

    # -- judges and candidates -------------------------------------------------------------------------
    def judge_argv(self, argv: Sequence[str], cwd: Path, writable: Iterable[Path],
                   readonly: Iterable[Path]) -> list[str]:
        """A gate session: the file system read-only, the run directory hidden but for ``writable`` (made
        if missing) and ``readonly``, a private /tmp, no network but loopback.

        The host's /proc stays mounted (not a new one) so that the candidate's sandbox, started inside,
        may mount its own: the kernel allows a new /proc only where a full one is already visible.
        """
        if not self.active:
            return list(argv)
        args = [self.binary, "--ro-bind", "/", "/", "--dev", "/dev", "--bind", "/proc", "/proc", "--tmpfs", "/tmp"]
        args += self._devices()
        if self.run_dir is not None and self.run_dir.is_dir():
            args += ["--tmpfs", str(self.run_dir)]
        shown = [*self.readable, *toolchain(), *(Path(p).resolve() for p in readonly)]
        args += [a for p in _roots(shown) if _hidden_in_judge(p, self.run_dir) and p.exists()
                 for a in ("--ro-bind", str(p), str(p))]
        args += self._writable([Path(p).resolve() for p in writable])
        args += ["--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--die-with-parent",
                 "--new-session", "--chdir", str(Path(cwd).resolve())]
        return [*args, "--", *argv]

    def candidate_argv(self, argv: Sequence[str], tree: Path, tmp_mb: int) -> list[str]:
        """The deliverable: its tree, the target, the toolchain and /sys read-only, a private /tmp of
        ``tmp_mb`` (its HOME too), no capabilities, its own PID namespace; the judge's network (loopback)."""
        tree = Path(tree).resolve()
        args = self._view([*self.readable, tree], tmp_bytes=tmp_mb << 20)
        # The machine's description, read-only: serving engines size their thread pools and memory from the
        # CPU topology there (vLLM's CPU backend runs lscpu, which reads /sys/devices/system).
        args += ["--ro-bind-try", "/sys", "/sys"]
        args += [*UNPRIVILEGED, "--unshare-pid", "--unshare-ipc", "--die-with-parent", "--new-session",
                 "--remount-ro", "/", "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp", "--chdir", str(tree)]
        return [*args, "--", *argv]

    # -- pieces ----------------------------------------------------------------------------------------
    def _view(self, readable: Iterable[Path], tmp_bytes: int | None = None) -> list[str]:
        """A root with only the toolchain and ``readable`` in it (read-only), devices, a fresh /proc and a
        private /tmp; /etc's secrets masked. Callers end with ``--remount-ro /`` once every mount is made."""
        args = [self.binary, "--dev", "/dev", "--proc", "/proc"]
        args += ["--size", str(tmp_bytes)] if tmp_bytes else []
        args += ["--tmpfs", "/tmp", *self._devices()]
        # Paths under /tmp land in the private /tmp: what a command needs from there is bound back.
        for path in _roots([*toolchain(), *(Path(p).resolve() for p in readable)]):
            args += ["--ro-bind", str(path), str(path)] if path.exists() else []
        # Merged-/usr systems make /bin, /lib, ... symbolic links into /usr: the same links inside.
        args += [a for p in TOOLCHAIN if os.path.islink(p) for a in ("--symlink", os.readlink(p), p)]
        for secret in SECRETS:
            if os.path.isdir(secret):
                args += ["--tmpfs", secret, "--remount-ro", secret]
            elif os.path.lexists(secret):
                args += ["--ro-bind", "/dev/null", secret]
        return args

    @staticmethod
    def _devices() -> list[str]:
        return [a for pattern in DEVICE_GLOBS for dev in sorted(glob.glob(pattern))
                for a in ("--dev-bind-try", dev, dev)]

    @staticmethod
    def _writable(paths: Iterable[Path]) -> list[str]:
        args = []
        for path in paths:
            path.mkdir(parents=True, exist_ok=True)
            args += ["--bind", str(path), str(path)]
        return args


def _hidden_in_judge(path: Path, run_dir: Path | None) -> bool:
    """Whether the judge's view (the host's, less /tmp and the run directory) lacks ``path``."""
    return path.is_relative_to("/tmp") or (run_dir is not None and path.is_relative_to(run_dir))
