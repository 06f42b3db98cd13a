"""Policy state snapshots around agent calls: a re-run call starts from the state its first try saw.

A policy names the tables that hold its state (``Policy.snapshot_tables``); ``memory.md`` is always part of
it. The store knows no policy's tables by name: it is handed them here.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vibeserve.store.db import RunStore

# A policy's own tables (``ensure_tables``) are named like this; the names are interpolated into SQL.
TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def take(store: RunStore, call_key: str, tables: tuple[str, ...]) -> None:
    """Save ``memory.md`` and the rows of the policy's ``tables`` (with their id counters) before the call
    ``call_key``, once: a re-run of the call restores them first."""
    if store.conn.execute("SELECT 1 FROM snapshots WHERE call_key = ?", (call_key,)).fetchone():
        return
    tables = _checked(tables)
    state: dict[str, Any] = {t: [dict(r) for r in store.conn.execute(f"SELECT * FROM {t}")] for t in tables}
    state["memory"] = store.memory_path.read_text() if store.memory_path.exists() else None
    # AUTOINCREMENT counters too: a re-run call must hand out the same issue ids as the first try.
    state["sequence"] = [dict(r) for r in store.conn.execute(
        f"SELECT name, seq FROM sqlite_sequence WHERE name IN ({', '.join('?' * len(tables))})", tables)
    ] if tables and store.has_table("sqlite_sequence") else []
    with store.tx() as c:
        c.execute("INSERT INTO snapshots VALUES (?, ?)", (call_key, _json(state)))


def restore(store: RunStore, call_key: str, tables: tuple[str, ...]) -> bool:
    """Put back what ``snapshot_policy_state`` saved for ``call_key``; False when nothing was saved.
    Only ``tables`` are restored (a snapshot taken by an older vibeserve holds the same table names)."""
    row = store.conn.execute("SELECT data FROM snapshots WHERE call_key = ?", (call_key,)).fetchone()
    if row is None:
        return False
    state = json.loads(row["data"])
    tables = tuple(t for t in _checked(tables) if t in state)
    with store.tx() as c:
        for t in tables:
            c.execute(f"DELETE FROM {t}")
            for r in state[t]:
                cols = ", ".join(r)
                c.execute(f"INSERT INTO {t} ({cols}) VALUES ({', '.join('?' * len(r))})", tuple(r.values()))
        if tables and state.get("sequence") is not None:
            c.execute(f"DELETE FROM sqlite_sequence WHERE name IN ({', '.join('?' * len(tables))})", tables)
            for r in state["sequence"]:
                if r["name"] in tables:
                    c.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (r["name"], r["seq"]))
    if state["memory"] is None:
        store.memory_path.unlink(missing_ok=True)
    else:
        store.memory_path.write_text(state["memory"])
    return True


def _checked(tables: tuple[str, ...]) -> tuple[str, ...]:
    bad = [t for t in tables if not TABLE_NAME.match(t)]
    if bad:
        raise ValueError(f"a policy's snapshot tables are plain lower-case names, not {', '.join(map(repr, bad))}")
    return tuple(tables)


def _json(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)
