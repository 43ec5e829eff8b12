"""The hub's ledger: its own SQLite file (``<hub_dir>/ledger.sqlite``), its own schema.

What the hub has committed here is what it has acknowledged: a node report is written (with its
message id, so a resend is recognised) before the ``down/ack`` leaves.  Job updates keep the
highest version only; every version is filed once in ``job_events``.  Telemetry is keyed by
``(node_id, t_s)``, so a batch the node thinned and resent adds nothing twice.
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    node_id       TEXT PRIMARY KEY,
    online        INTEGER NOT NULL DEFAULT 0,
    last_seen_s   REAL,
    soc_pct       REAL,
    pv_w          REAL,
    printer       TEXT,
    current_job   TEXT,
    percent       REAL,
    next_window_start_s REAL,
    next_window_end_s   REAL,
    queue_length  INTEGER NOT NULL DEFAULT 0,
    capabilities  TEXT,
    seq           INTEGER NOT NULL DEFAULT 0,
    provisioned_s REAL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id        TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    node_id       TEXT,
    requested_node TEXT,
    file_path     TEXT NOT NULL,
    file_sha256   TEXT NOT NULL,
    file_bytes    INTEGER NOT NULL,
    requirements  TEXT NOT NULL DEFAULT '{}',
    priority      INTEGER NOT NULL DEFAULT 0,
    deadline_s    REAL,
    expires_s     REAL NOT NULL,
    energy_wh     REAL,
    manifest      TEXT,
    hub_state     TEXT NOT NULL DEFAULT 'new',
    wire_state    TEXT NOT NULL DEFAULT 'QUEUED',
    node_state    TEXT,
    version       INTEGER NOT NULL DEFAULT 0,
    reason        TEXT NOT NULL DEFAULT '',
    created_s     REAL NOT NULL,
    updated_s     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS job_events (
    job_id      TEXT NOT NULL,
    version     INTEGER NOT NULL,
    node_state  TEXT NOT NULL,
    wire_state  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    t_s         REAL NOT NULL,
    msg_id      TEXT NOT NULL,
    PRIMARY KEY (job_id, version, node_state)
);
CREATE TABLE IF NOT EXISTS commands (
    command_id  TEXT PRIMARY KEY,
    node_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    args        TEXT NOT NULL,
    signed      TEXT,
    expires_s   REAL,
    created_s   REAL NOT NULL,
    sent        INTEGER NOT NULL DEFAULT 0,
    ok          INTEGER,
    detail      TEXT,
    answered_s  REAL
);
CREATE TABLE IF NOT EXISTS received (
    node_id  TEXT NOT NULL,
    msg_id   TEXT NOT NULL,
    kind     TEXT NOT NULL,
    t_s      REAL NOT NULL,
    PRIMARY KEY (node_id, msg_id)
);
CREATE TABLE IF NOT EXISTS telemetry (
    node_id    TEXT NOT NULL,
    t_s        REAL NOT NULL,
    pv_w       REAL,
    pv_v       REAL,
    battery_v  REAL,
    battery_a  REAL,
    load_w     REAL,
    printer_w  REAL,
    soc_pct    REAL,
    level      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node_id, t_s)
);
CREATE TABLE IF NOT EXISTS job_records (
    job_id   TEXT PRIMARY KEY,
    node_id  TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    record   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS progress (
    job_id   TEXT PRIMARY KEY,
    node_id  TEXT NOT NULL,
    percent  REAL NOT NULL,
    t_s      REAL NOT NULL
);
"""


class Ledger:
    """One connection guarded by a lock: the hub's paho thread and its pump thread share it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._lock = threading.RLock()
        current = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise RuntimeError(f"{path}: ledger schema {current} is newer than this hub ({SCHEMA_VERSION})")
        with self.tx() as conn:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the lock (ROLLBACK on error)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return fn(self._conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def next_seq(self, conn: sqlite3.Connection, node_id: str) -> int:
        """The next signing sequence number of ``node_id`` (inside a transaction)."""
        conn.execute("INSERT OR IGNORE INTO nodes(node_id) VALUES(?)", (node_id,))
        conn.execute("UPDATE nodes SET seq = seq + 1 WHERE node_id = ?", (node_id,))
        return conn.execute("SELECT seq FROM nodes WHERE node_id = ?", (node_id,)).fetchone()[0]
