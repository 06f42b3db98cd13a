"""The run store: ``runs/<id>/run.db`` (SQLite, WAL) plus transcripts and ``memory.md`` beside it.

The store's own tables are the run, its rounds, the step journal, agent calls, gates, snapshots and live
process groups. A policy's state lives in tables the policy declares (``ensure_tables``) and names for the
snapshots around agent calls (``snapshot_policy_state``); the store knows none of them by name.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vibeserve.errors import StoreError
from vibeserve.store import snapshots
from vibeserve.store.records import GateRecord, RoundRecord, RunRecord
from vibeserve.store.schema import SCHEMA, SCHEMA_VERSION
from vibeserve.types import AgentResult, GateVerdict, Role


def _json(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _digest(files: dict[str, str]) -> str:
    return hashlib.sha256(_json(files).encode()).hexdigest()


def seal(manifest: dict[str, str]) -> str:
    """A manifest with its own checksum, so damage to the store is not mistaken for a changed target."""
    return _json({"files": manifest, "sha256": _digest(manifest)})


class RunStore:
    """One run's SQLite database. Every write is its own transaction, so a kill -9 loses at most one step.

    Safe to share between threads (a parallel run's rounds): each thread gets its own connection, made on
    its first use, so one thread's transaction never interleaves with another's; WAL lets them read while
    one writes, and a writer waits (``busy_timeout``) for another's transaction to end.
    """

    FILE = "run.db"

    def __init__(self, run_dir: Path, conn: sqlite3.Connection):
        self.dir = run_dir
        self._local = threading.local()
        self._local.conn = conn
        self._conns = [conn]
        self._conns_lock = threading.Lock()

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection to ``run.db``."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect(self.dir / self.FILE)
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    # -- opening -------------------------------------------------------------------------------------
    @classmethod
    def create(cls, run_dir: Path) -> RunStore:
        path = run_dir / cls.FILE
        if path.exists():
            raise StoreError(f"{path} already exists; resume it with `vibeserve resume {run_dir.name}`")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "transcripts").mkdir(exist_ok=True)
        conn = cls._connect(path)
        with conn:
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return cls(run_dir, conn)

    @classmethod
    def open(cls, run_dir: Path) -> RunStore:
        """Open a run's store; one that is not a vibeserve store is an error and is not written to at all."""
        path = run_dir / cls.FILE
        if not path.is_file():
            raise StoreError(f"{path} does not exist: {run_dir} is not a vibeserve run")
        try:
            with open(path, "rb") as f:
                header = f.read(16)
        except OSError as e:
            raise StoreError(f"{path} cannot be read ({e.strerror}); it was left as it is") from None
        if header != b"SQLite format 3\x00":
            what = "is empty" if not header else "is not an SQLite database"
            raise StoreError(f"{path} {what}, so it holds no run; it was left as it is (restore it from a backup, "
                             "or start a new run)")
        try:  # looked at read-only first: nothing is written to a file until it is known to be ours
            probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                version = probe.execute("PRAGMA user_version").fetchone()[0]
                tables = {r[0] for r in probe.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            finally:
                probe.close()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path} cannot be read as a run store ({e}); it was left as it is") from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} has store version {version}, newer than this vibeserve reads ({SCHEMA_VERSION}); "
                "upgrade vibeserve. The store was left as it is."
            )
        if version < 1 or "run" not in tables or "rounds" not in tables:
            raise StoreError(f"{path} is not a vibeserve run store (version {version}); it was left as it is")
        try:
            conn = cls._connect(path)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path} cannot be opened for writing ({e}); it was left as it is") from None
        return cls(run_dir, conn)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def ensure_tables(self, ddl: str) -> None:
        """Create a policy's own tables on this store; ``ddl`` uses ``CREATE TABLE IF NOT EXISTS`` so that
        running it again (every start, every MCP server) changes nothing."""
        # Comments dropped first, so a ';' in one does not split a statement.
        statements = [s.strip() for s in re.sub(r"--[^\n]*", "", ddl).split(";") if s.strip()]
        for statement in statements:
            if not statement.upper().startswith(("CREATE TABLE IF NOT EXISTS", "CREATE INDEX IF NOT EXISTS")):
                raise ValueError(f"a policy's tables are made with CREATE ... IF NOT EXISTS only: {statement[:60]!r}")
        with self.tx() as c:
            for statement in statements:
                c.execute(statement)

    # -- paths ---------------------------------------------------------------------------------------
    @property
    def transcripts(self) -> Path:
        return self.dir / "transcripts"

    @property
    def memory_path(self) -> Path:
        return self.dir / "memory.md"

    # -- the run row ---------------------------------------------------------------------------------
    def init_run(self, run_id: str, target: str, policy: str, config: dict, manifest: dict) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT INTO run (id, target, policy, status, config, manifest, created_at) VALUES (?,?,?,?,?,?,?)",
                (run_id, target, policy, "running", _json(config), seal(manifest), time.time()),
            )

    def manifest(self) -> dict[str, str]:
        """The target's manifest as recorded at the start, checked against its own checksum."""
        raw = self.run()["manifest"]
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and "files" in data and "sha256" in data:
            if _digest(data["files"]) == data["sha256"]:
                return data["files"]
        elif isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
            return data  # recorded before manifests carried a checksum
        raise StoreError(f"{self.dir / self.FILE}: the recorded manifest of the target is damaged (it does not "
                         "match its own checksum), so the store, not the target, changed; it was left as it is. "
                         "Restore run.db from a backup, or start a new run")

    def replace_manifest(self, manifest: dict[str, str]) -> None:
        """Record a new manifest (the user accepted a change to the target's files)."""
        with self.tx() as c:
            c.execute("UPDATE run SET manifest = ?", (seal(manifest),))

    def run(self) -> sqlite3.Row:
        row = self.conn.execute("SELECT * FROM run").fetchone()
        if row is None:
            raise StoreError(f"{self.dir / self.FILE} holds no run row; it was left as it is")
        return row

    def update_run(self, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.tx() as c:
            c.execute(f"UPDATE run SET {cols}", tuple(fields.values()))

    # -- rounds and the step journal -----------------------------------------------------------------
    def start_round(self, n: int) -> None:
        with self.tx() as c:
            c.execute("INSERT OR IGNORE INTO rounds (round, status, started_at) VALUES (?, 'running', ?)",
                      (n, time.time()))

    def update_round(self, n: int, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.tx() as c:
            c.execute(f"UPDATE rounds SET {cols} WHERE round = ?", (*fields.values(), n))

    def rounds(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM rounds ORDER BY round").fetchall()

    def round(self, n: int) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM rounds WHERE round = ?", (n,)).fetchone()

    def step(self, n: int, attempt: int, name: str) -> dict | None:
        row = self.conn.execute(
            "SELECT data FROM steps WHERE round = ? AND attempt = ? AND name = ?", (n, attempt, name)
        ).fetchone()
        return json.loads(row["data"]) if row else None

    def record_step(self, n: int, attempt: int, name: str, data: dict) -> None:
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?)", (n, attempt, name, _json(data), time.time()))

    # -- agent calls ---------------------------------------------------------------------------------
    def agent_call(self, key: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM agent_calls WHERE key = ?", (key,)).fetchone()

    def record_agent_call(
        self, key: str, round_: int, attempt: int, role: Role, harness: str, model: str | None, result: AgentResult
    ) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT INTO agent_calls (key, round, attempt, role, harness, model, exit_reason, reply, tokens_in,"
                " tokens_out, tokens_cached, cost_usd, wall_s, transcript, error, finished_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    key, round_, attempt, str(role), harness, model, str(result.exit_reason),
                    _json(result.reply) if result.reply is not None else None,
                    result.tokens_in, result.tokens_out, result.tokens_cached, result.cost_usd, result.wall_s,
                    str(result.transcript_path) if result.transcript_path else None, result.error, time.time(),
                ),
            )

    def agent_calls(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM agent_calls ORDER BY finished_at").fetchall()

    def total_cost(self) -> float:
        return float(self.conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM agent_calls").fetchone()[0])

    def max_call_cost(self) -> float:
        return float(self.conn.execute("SELECT COALESCE(MAX(cost_usd), 0) FROM agent_calls").fetchone()[0])

    # -- gates ---------------------------------------------------------------------------------------
    def record_gate(self, round_: int, attempt: int, v: GateVerdict, step: str | None = None) -> None:
        """Store a verdict; with ``step``, journal it in the same transaction so resume never runs it twice."""
        # The verdict's warnings (a busy machine while it measured) are kept in its report for the run report.
        report = {**v.report, "warnings": v.warnings} if v.warnings else v.report
        with self.tx() as c:
            if step is not None:
                c.execute("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?)",
                          (round_, attempt, step, v.model_dump_json(), time.time()))
            c.execute(
                "INSERT INTO gates (round, attempt, gate, commit_sha, passed, metric, samples, spread, reason,"
                " report, command, started_at, wall_s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    round_, attempt, str(v.gate), v.commit, int(v.passed), v.metric, _json(v.samples), v.spread,
                    v.reason, _json(report), _json(v.command), v.started_at, v.wall_s,
                ),
            )

    def gates(self, round_: int | None = None) -> list[sqlite3.Row]:
        if round_ is None:
            return self.conn.execute("SELECT * FROM gates ORDER BY id").fetchall()
        return self.conn.execute("SELECT * FROM gates WHERE round = ? ORDER BY id", (round_,)).fetchall()

    # -- typed reads (each JSON column parsed once) ----------------------------------------------------
    def run_record(self) -> RunRecord:
        return RunRecord.from_row(self.run())

    def round_records(self) -> list[RoundRecord]:
        return [RoundRecord.from_row(r) for r in self.rounds()]

    def round_record(self, n: int) -> RoundRecord | None:
        row = self.round(n)
        return None if row is None else RoundRecord.from_row(row)

    def gate_records(self, round_: int | None = None) -> list[GateRecord]:
        return [GateRecord.from_row(r) for r in self.gates(round_)]

    def has_table(self, name: str) -> bool:
        """Does this store hold table ``name`` (a policy's tables exist only in runs of that policy)?"""
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() \
            is not None

    def query(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        """A read-only query for reports and the dashboard (aggregates, a policy's tables); nothing else."""
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")) or ";" in sql.rstrip().rstrip(";"):
            raise ValueError(f"RunStore.query takes one SELECT, not {sql[:60]!r}")
        return self.conn.execute(sql, params).fetchall()

    # -- policy state snapshots (so a re-run agent call starts from the state the first try saw) ------
    def snapshot_policy_state(self, call_key: str, tables: tuple[str, ...] = ()) -> None:
        """Save ``memory.md`` and the rows of the policy's ``tables`` before the call ``call_key``, once."""
        snapshots.take(self, call_key, tables)

    def restore_policy_state(self, call_key: str, tables: tuple[str, ...] = ()) -> bool:
        """Put back what was saved for ``call_key`` (its ``tables`` and memory.md); False when nothing was."""
        return snapshots.restore(self, call_key, tables)

    # -- process groups of gates and agent calls -------------------------------------------------------
    def add_process(self, pgid: int, what: str) -> None:
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO processes VALUES (?,?,?)", (pgid, what, time.time()))

    def remove_process(self, pgid: int) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM processes WHERE pgid = ?", (pgid,))

    def processes(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM processes").fetchall()

