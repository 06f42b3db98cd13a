"""The store's own tables (``run.db``), and the version a store made with them carries.

A policy's tables are not here: each policy declares its own (``RunStore.ensure_tables``).
"""

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE run (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    policy TEXT NOT NULL,
    status TEXT NOT NULL,            -- running | finished | stopped | failed
    stop_reason TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,            -- JSON: the RunConfig this run was started with
    manifest TEXT NOT NULL,          -- JSON: artifact hashes at start
    baseline_commit TEXT,
    baseline_metric REAL,
    best_commit TEXT,
    best_metric REAL,
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE rounds (
    round INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    task TEXT,                       -- JSON Task
    start_commit TEXT,
    candidate TEXT,
    metric REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,                     -- JSON RoundResult once finished
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE steps (                 -- the resume journal: a step recorded here is never run again
    round INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (round, attempt, name)
);
CREATE TABLE agent_calls (
    key TEXT PRIMARY KEY,
    round INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    role TEXT NOT NULL,
    harness TEXT NOT NULL,
    model TEXT,
    exit_reason TEXT NOT NULL,
    reply TEXT,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    tokens_cached INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL,
    wall_s REAL NOT NULL,
    transcript TEXT,
    error TEXT NOT NULL DEFAULT '',
    finished_at REAL NOT NULL
);
CREATE TABLE gates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    round INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    gate TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    passed INTEGER NOT NULL,
    metric REAL,
    samples TEXT NOT NULL,
    spread REAL,
    reason TEXT NOT NULL,
    report TEXT NOT NULL,
    command TEXT NOT NULL,
    started_at REAL NOT NULL,
    wall_s REAL NOT NULL
);
CREATE TABLE snapshots (             -- policy state before an agent call, restored if the call is re-run
    call_key TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE processes (             -- process groups of gates and agent calls; resume kills any left over
    pgid INTEGER PRIMARY KEY,
    what TEXT NOT NULL,
    started_at REAL NOT NULL
);
"""
