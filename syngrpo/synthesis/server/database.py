"""The job store's SQLite file: its tables, the columns added since the first release, how it is opened.

Its own module because the tables are the store's on-disk contract: a store written by an older
server must open under a newer one (:data:`_ADDED_COLUMNS` are added on opening), and the pragmas
decide what a crash may lose (WAL with ``synchronous=NORMAL``: durable across a process crash; an
operating-system crash or power loss may lose the last commits).  The transactions on these tables
are :class:`~syngrpo.synthesis.server.store.JobStore`'s.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    synthesizer TEXT NOT NULL,
    group_key TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    request TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    bytes INTEGER NOT NULL DEFAULT 0,
    delete_requested INTEGER NOT NULL DEFAULT 0,
    client TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(state, finished_at);
CREATE TABLE IF NOT EXISTS tombstones (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    deleted_at REAL NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tombstones_key ON tombstones(key);
CREATE INDEX IF NOT EXISTS tombstones_deleted ON tombstones(deleted_at);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

#: columns added after the first release: a store written by an older server gets them on opening
_ADDED_COLUMNS = {
    "bytes": "INTEGER NOT NULL DEFAULT 0",
    "delete_requested": "INTEGER NOT NULL DEFAULT 0",
    "client": "TEXT NOT NULL DEFAULT ''",
}

#: bytes the WAL file is truncated to after a checkpoint
WAL_SIZE_LIMIT = 1024 * 1024


def open_database(db_path: Path) -> sqlite3.Connection:
    """Connect to ``jobs.sqlite3`` (autocommit: transactions are explicit, ``BEGIN IMMEDIATE``), set its
    pragmas, create its tables and add the columns an older store lacks; raises :class:`sqlite3.Error`."""
    db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    # the WAL file keeps its largest size (~4 MiB) after each checkpoint unless told: it counts in the store
    db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    db.executescript(_SCHEMA)
    have = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
    for name, decl in _ADDED_COLUMNS.items():
        if name not in have:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
    return db
