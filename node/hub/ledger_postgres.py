"""The PostgreSQL ledger (psycopg 3): what several ``hub serve`` workers share.

Each worker holds one connection (its paho thread and its pump thread take turns under a lock);
PostgreSQL orders the workers: ``INSERT ... ON CONFLICT DO NOTHING`` on a report id makes the
second worker wait for the first one's commit and then insert nothing, the row lock of
``UPDATE nodes ... RETURNING seq`` hands out signing sequence numbers one at a time, and the pump's
lease and ``FOR UPDATE SKIP LOCKED`` keep one job from being signed twice.  A connection the
server dropped (restart, failover) is replaced at the next transaction; the hub acks nothing that
did not commit, so the node's outbox resends what was in flight.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar

import psycopg

from node.hub.ledger import Ledger
from node.hub.migrations import SCHEMA_VERSION, statements

T = TypeVar("T")

#: key of the advisory lock that lets one worker at a time migrate (others wait, then find nothing to do)
MIGRATION_LOCK = 0x7072696E746E6F64  # "printnod"


class Row(tuple):
    """A result row read by position (``row[0]``, unpacking) or by column name (``row["job_id"]``, ``dict(row)``)."""

    _names: dict[str, int]

    def __new__(cls, values: Sequence[Any], names: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, names)


@lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """The hub's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Conn:
    """A psycopg connection that speaks the ledger's SQL (``?`` placeholders)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        return self._conn.execute(to_pyformat(sql), tuple(params))  # type: ignore[arg-type]


class PostgresLedger(Ledger):
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.location = url
        self._lock = threading.RLock()
        self._conn = self._connect()
        self._migrate()

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.location, autocommit=True, row_factory=_row_factory,  # type: ignore[arg-type]
                               connect_timeout=10)

    def _migrate(self) -> None:
        with self.tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS ledger_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM ledger_schema").fetchone()
            current = 0 if row is None else row[0]
            if current > SCHEMA_VERSION:
                raise RuntimeError(f"ledger schema {current} is newer than this hub ({SCHEMA_VERSION})")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in statements(version, self.dialect):
                    conn.execute(statement)
            if row is None:
                conn.execute("INSERT INTO ledger_schema(version) VALUES(?)", (SCHEMA_VERSION,))
            else:
                conn.execute("UPDATE ledger_schema SET version = ?", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        return self.read(lambda c: c.execute("SELECT version FROM ledger_schema").fetchone()[0])

    @contextmanager
    def tx(self, durable: bool = True) -> Iterator[_Conn]:
        with self._lock:
            if self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            with self._conn.transaction():
                conn = _Conn(self._conn)
                if not durable:
                    conn.execute("SET LOCAL synchronous_commit TO OFF")
                yield conn

    def read(self, fn: Callable[[_Conn], T]) -> T:
        with self.tx() as conn:
            return fn(conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
