"""Limits on a candidate server: memory, processes, file size, and a group it cannot leave.

``CandidateLimits`` comes from the target's ``[limits]``. Where the framework may create control groups
(root, cgroup v2 or v1), a candidate runs in its own group: memory and process counts are bounded there,
every descendant stays in it (so a daemon cannot outlive its gate), and the group's counters say which
limit a dead candidate ran into. Elsewhere resource limits (``setrlimit``) bound memory as address space.
File size is always an rlimit: the candidate's logs are files it writes, so no log outgrows ``log_mb``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
import uuid
from pathlib import Path

from pydantic import BaseModel, ConfigDict

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Signs in a dead candidate's stderr that it ran out of what its limits allow.
MEMORY_SIGNS = ("MemoryError", "Cannot allocate memory", "can't allocate memory", "std::bad_alloc",
                "out of memory")
PROCESS_SIGNS = ("can't start new thread", "Resource temporarily unavailable", "Cannot fork",
                 "pthread_create failed")


class CandidateLimits(BaseModel):
    """What one candidate may use, in bytes and counts; plain data, so a gate session can carry it."""

    model_config = ConfigDict(extra="forbid")
    memory_bytes: int | None = None
    processes: int = 1024
    file_bytes: int = 64 << 20
    tmp_mb: int = 1024
    cgroup: list[Path] = []  # the candidate's control groups (one per hierarchy), when there are any

    @classmethod
    def from_spec(cls, limits, backend: str) -> CandidateLimits:  # noqa: ANN001 - a target.spec.Limits
        memory = limits.memory_mb << 20 if limits.memory_mb else None
        if memory is None and backend == "cpu":
            memory = physical_memory() * 3 // 4
        return cls(memory_bytes=memory, processes=limits.processes, file_bytes=limits.log_mb << 20,
                   tmp_mb=limits.tmp_mb)

    def describe(self) -> str:
        mem = f"memory {self.memory_bytes >> 20} MiB" if self.memory_bytes else "memory unbounded"
        how = "control group" if self.cgroup else "rlimits"
        return (f"{mem}, {self.processes} processes, files up to {self.file_bytes >> 20} MiB, "
                f"/tmp {self.tmp_mb} MiB ({how}; [limits] in target.toml)")

    def apply(self) -> None:
        """In the child, before it runs the candidate (``preexec_fn``): join the group, set the rlimits."""
        for group in self.cgroup:
            with open(group / "cgroup.procs", "w") as f:
                f.write("0")
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_bytes, self.file_bytes))
        if self.memory_bytes and not self.cgroup:
            resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
        if not self.cgroup:
            # Not enforced for root (the kernel exempts uid 0), which is why a control group comes first.
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NPROC, (self.processes, self.processes))

    def which_passed(self, returncode: int | None, stderr_tail: str, files: list[Path]) -> str:
        """The limit a dead candidate most likely ran into, in one phrase naming the key; '' if none."""
        size = max((f.stat().st_size for f in files if f.exists()), default=0)
        if returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ) or size >= self.file_bytes:
            return f"it wrote a file of {self.file_bytes >> 20} MiB, the [limits].log_mb limit"
        counters = group_counters(self.cgroup)
        if counters.get("oom_kill", 0) or counters.get("failcnt", 0) or any(s in stderr_tail for s in MEMORY_SIGNS):
            if self.memory_bytes:
                return f"it ran out of memory under the [limits].memory_mb limit of {self.memory_bytes >> 20} MiB"
            return "it ran out of memory"
        if counters.get("max", 0) or any(s in stderr_tail for s in PROCESS_SIGNS):
            return f"it could not start more processes or threads ([limits].processes = {self.processes})"
        return ""


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class CandidateGroup:
    """A control group per gate session for the candidate (``with CandidateGroup(limits) as g``).

    ``limits.cgroup`` is empty when no group could be made (not root, no writable cgroup file system);
    then rlimits do what they can.
    """

    def __init__(self, limits: CandidateLimits):
        self.limits = limits
        self.paths: list[Path] = []

    def __enter__(self) -> CandidateLimits:
        name = f"vibeserve-{uuid.uuid4().hex[:12]}"
        try:
            self.paths = _make_groups(name, self.limits)
        except OSError:
            self._remove()
            self.paths = []
        return self.limits.model_copy(update={"cgroup": self.paths})

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def counters(self) -> dict[str, int]:
        return group_counters(self.paths)

    def _remove(self) -> None:
        """Kill whatever is left in the groups, then remove them."""
        for path in self.paths:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                pids = _pids(path)
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)
            with contextlib.suppress(OSError):
                path.rmdir()


def _pids(group: Path) -> list[int]:
    try:
        return [int(x) for x in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _make_groups(name: str, limits: CandidateLimits) -> list[Path]:
    if os.geteuid() != 0:
        return []
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # cgroup v2, one hierarchy
        enabled = (CGROUP_ROOT / "cgroup.subtree_control").read_text().split()
        if not {"pids", "memory"} <= set(enabled):
            return []
        group = CGROUP_ROOT / name
        group.mkdir()
        (group / "pids.max").write_text(str(limits.processes))
        if limits.memory_bytes:
            (group / "memory.max").write_text(str(limits.memory_bytes))
            with contextlib.suppress(OSError):
                (group / "memory.swap.max").write_text("0")
        return [group]
    pids, memory = CGROUP_ROOT / "pids", CGROUP_ROOT / "memory"  # cgroup v1: one hierarchy per controller
    if not (pids / "cgroup.procs").exists() or not (memory / "cgroup.procs").exists():
        return []
    made = []
    for root in (pids, memory):
        (root / name).mkdir()
        made.append(root / name)
    (made[0] / "pids.max").write_text(str(limits.processes))
    if limits.memory_bytes:
        (made[1] / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
    return made


def group_counters(groups: list[Path]) -> dict[str, int]:
    """``oom_kill`` and ``max`` (process limit hit) and ``failcnt`` (v1 memory limit hit) of the groups."""
    out: dict[str, int] = {}
    for group in groups:
        for events in ("memory.events", "pids.events"):
            with contextlib.suppress(OSError, ValueError):
                for line in (group / events).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    out[key] = out.get(key, 0) + int(value)
        with contextlib.suppress(OSError, ValueError):
            out["failcnt"] = out.get("failcnt", 0) + int((group / "memory.failcnt").read_text())
    return out
