"""The stops a run checks before each round: the round budget, the wall clock, the plateau.

The wall clock counts the time the run was working, over all its sessions: the union of its rounds' spans
(rounds in flight side by side count once), where a round cut short by a kill ends at its last recorded
step or agent call, not at the moment the run was resumed (the hours between sessions are not the run's).
"""

from __future__ import annotations

import time

from vibeserve.store import RunStore
from vibeserve.types import RoundStatus


def working_seconds(store: RunStore) -> float:
    """Seconds the run has spent working so far, by its store."""
    last = {r: at for r, at in store.query(
        "SELECT round, MAX(at) FROM (SELECT round, at FROM steps UNION ALL "
        "SELECT round, finished_at AS at FROM agent_calls) GROUP BY round")}
    spans = sorted((r.started_at, r.finished_at or max(last.get(r.round) or r.started_at, r.started_at))
                   for r in store.round_records())
    total, end = 0.0, float("-inf")
    for start, finish in spans:
        if finish <= end:
            continue
        total += finish - max(start, end)
        end = finish
    return total


def plateaued(store: RunStore, window: int) -> bool:
    """No round kept in the last ``window`` finished rounds (0: never)."""
    if window <= 0:
        return False
    done = [r for r in store.round_records() if r.round > 0]
    return len(done) >= window and all(r.status != RoundStatus.KEPT for r in done[-window:])


def stop_reason(store: RunStore, n: int, started: float, rounds: int, max_wall_h: float,
                plateau: int) -> str | None:
    """Why no round after round ``n`` may start, or None; ``started`` is this session's ``time.monotonic()``
    start less the time earlier sessions worked."""
    if n >= rounds:
        return f"round budget reached ({rounds} rounds)"
    if time.monotonic() - started > max_wall_h * 3600:
        return f"wall-clock budget reached ({max_wall_h} h)"
    if plateaued(store, plateau):
        return f"plateau: no gain in the last {plateau} rounds"
    return None
