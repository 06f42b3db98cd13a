"""``GateScheduler``: when a parallel run's gates may start, so that a benchmark never shares the machine.

The rule: a benchmark gate runs alone, with no other gate of this run beside it (and, through the
machine-wide benchmark lock the gate takes as well, no other run's benchmark); accuracy and probe gates
may run beside each other, up to the target's ``[hardware].concurrent_checks``, but never beside a
benchmark. A benchmark that is waiting goes before checks that arrive after it, so a stream of checks
cannot starve it. Agent calls are not gates and are never held back: they mostly wait on a model API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from vibeserve.types import GateName


@dataclass
class SlotRecord:
    """One gate's time in the scheduler: how long it queued, and when it held its slot."""

    gate: str
    queued_s: float
    held_from: float  # time.time() when the slot was granted
    held_until: float = 0.0


@dataclass
class GateScheduler:
    """Grants gate slots by the rule above; ``slot(gate)`` blocks until the gate may run."""

    concurrent_checks: int = 1
    records: list[SlotRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.concurrent_checks < 1:
            raise ValueError("concurrent_checks must be at least 1")
        self._cond = threading.Condition()
        self._checks = 0  # accuracy and probe gates running
        self._benchmark = False  # a benchmark gate running
        self._benchmarks_waiting = 0

    @contextmanager
    def slot(self, gate: GateName) -> Iterator[SlotRecord]:
        """Hold a slot for ``gate`` while the block runs; the record says how long it waited."""
        asked = time.monotonic()
        bench = gate is GateName.BENCHMARK
        with self._cond:
            if bench:
                self._benchmarks_waiting += 1
                try:
                    self._cond.wait_for(lambda: not self._benchmark and self._checks == 0)
                finally:
                    self._benchmarks_waiting -= 1
                self._benchmark = True
            else:
                self._cond.wait_for(lambda: not self._benchmark and not self._benchmarks_waiting
                                    and self._checks < self.concurrent_checks)
                self._checks += 1
            record = SlotRecord(gate=str(gate), queued_s=time.monotonic() - asked, held_from=time.time())
            self.records.append(record)
        try:
            yield record
        finally:
            with self._cond:
                record.held_until = time.time()
                if bench:
                    self._benchmark = False
                else:
                    self._checks -= 1
                self._cond.notify_all()

    def mean_wait_s(self) -> float:
        """Mean time a gate queued for its slot (0 when none ran)."""
        with self._cond:
            waits = [r.queued_s for r in self.records]
        return sum(waits) / len(waits) if waits else 0.0
