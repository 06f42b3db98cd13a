"""How busy the machine was with other work while a gate measured: a number kept with every measurement.

The machine's busy CPU time (``/proc/stat``) over a gate, less the CPU time of this process and of
everything it started and reaped (the gate session, its candidate, checker and benchmark), is the work
of others; divided by the wall time it is in cores. It is recorded with the benchmark's numbers, and a
measurement taken while it was above ``[benchmark].max_background_load`` carries a warning.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

TICKS = os.sysconf("SC_CLK_TCK")


def _busy_s() -> float | None:
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle - steal) / TICKS


def _ours_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class LoadMeter:
    """``with LoadMeter() as m: ...`` then ``m.report()``: other work in cores during the block."""

    cores: int = os.cpu_count() or 1
    _t0: float = 0.0
    _busy0: float | None = None
    _ours0: float = 0.0
    _before: float = 0.0
    other_cores: float | None = None
    wall_s: float = 0.0

    def __enter__(self) -> LoadMeter:
        self._before = os.getloadavg()[0]
        self._t0, self._busy0, self._ours0 = time.monotonic(), _busy_s(), _ours_s()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.monotonic() - self._t0
        busy = _busy_s()
        if busy is None or self._busy0 is None or self.wall_s <= 0:
            return
        others = (busy - self._busy0) - (_ours_s() - self._ours0)
        self.other_cores = max(0.0, others / self.wall_s)

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
