"""How busy the machine was with other work while a gate measured: a number kept with every measurement.

The machine's busy CPU time (``/proc/stat``) over a gate, less the CPU time of this process and of every
process descended from it (the gate session, its candidate, checker and benchmark, sandboxed or not), is
the work of others; divided by the wall time it is in cores. The descendants' CPU time is the larger of
what was reaped (exact, but a sandbox's inner processes do not always hand theirs back) and what sampling
``/proc`` a few times a second saw (which misses processes that live less than a sample): the figure
leans towards reporting a little more other work than there was, never less. It is recorded with the benchmark's
numbers, and a measurement taken while it was above ``[benchmark].max_background_load`` carries a warning.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass, field

TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.2


def _busy_s() -> float | None:
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle - steal) / TICKS


def _self_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def _reaped_s() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def _processes() -> dict[tuple[int, int], tuple[int, float]]:
    """Every process: (pid, start time) -> (parent pid, CPU seconds so far)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()  # fields after the command name
        try:
            ppid, utime, stime, start = int(rest[1]), int(rest[11]), int(rest[12]), int(rest[19])
        except (IndexError, ValueError):
            continue
        out[(int(name), start)] = (ppid, (utime + stime) / TICKS)
    return out


def _descendants(procs: dict[tuple[int, int], tuple[int, float]], root: int) -> set[tuple[int, int]]:
    children: dict[int, list[tuple[int, int]]] = {}
    for key, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(key)
    found, todo = set(), [root]
    while todo:
        for key in children.get(todo.pop(), []):
            if key not in found:
                found.add(key)
                todo.append(key[0])
    return found


@dataclass
class LoadMeter:
    """``with LoadMeter() as m: ...`` then ``m.report()``: other work in cores during the block."""

    cores: int = os.cpu_count() or 1
    other_cores: float | None = None
    wall_s: float = 0.0
    _t0: float = 0.0
    _busy0: float | None = None
    _self0: float = 0.0
    _reaped0: float = 0.0
    _before: float = 0.0
    _first: dict[tuple[int, int], float] = field(default_factory=dict)
    _last: dict[tuple[int, int], float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        procs = _processes()
        for key in _descendants(procs, os.getpid()):
            cpu = procs[key][1]
            self._first.setdefault(key, 0.0)  # started during the window: all its CPU time is ours
            self._last[key] = cpu

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def __enter__(self) -> LoadMeter:
        self._before = os.getloadavg()[0]
        procs = _processes()  # processes of ours already running count from now on
        for key in _descendants(procs, os.getpid()):
            self._first[key] = self._last[key] = procs[key][1]
        self._t0, self._busy0, self._self0, self._reaped0 = time.monotonic(), _busy_s(), _self_s(), _reaped_s()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.wall_s = time.monotonic() - self._t0
        busy = _busy_s()
        if busy is None or self._busy0 is None or self.wall_s <= 0:
            return
        # Two views of the descendants' CPU: what was reaped (exact, but a sandbox's inner processes may not
        # be handed back) and what was sampled (misses short-lived ones): the larger is nearer the truth.
        sampled = sum(self._last[k] - self._first.get(k, 0.0) for k in self._last)
        ours = (_self_s() - self._self0) + max(sampled, _reaped_s() - self._reaped0)
        self.other_cores = max(0.0, ((busy - self._busy0) - ours) / self.wall_s)

    def report(self) -> dict[str, float | int | None]:
        other = None if self.other_cores is None else round(self.other_cores, 3)
        return {"other_cores": other, "loadavg_before": round(self._before, 2), "cores": self.cores,
                "wall_s": round(self.wall_s, 2)}

    def warning(self, limit: float) -> str:
        """A one-line warning when others kept more than ``limit`` cores busy; '' otherwise."""
        if self.other_cores is None or self.other_cores <= limit:
            return ""
        return (f"other work kept {self.other_cores:.2f} of {self.cores} cores busy during this measurement "
                f"(above [benchmark].max_background_load = {limit:g}): its numbers may be low and noisy")
