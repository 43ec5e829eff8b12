"""The hub's ledger: one interface, two backends (SQLite by default, PostgreSQL for a fleet).

What the hub has committed here is what it has acknowledged: a node report is written (with its
message id, so a resend is recognised) before the ``down/ack`` leaves.  Job updates keep the
highest version only; every version is filed once in ``job_events``.  Telemetry is keyed by
``(node_id, t_s)``, so a batch the node thinned and resent adds nothing twice.

The hub's SQL is written once, in the subset both databases speak (``INSERT ... ON CONFLICT``,
``RETURNING``, ``?`` placeholders, which the PostgreSQL backend spells ``%s``); rows answer by
column name and by position on both.  ``node/hub/backends.py`` opens the backend a location names;
the schema lives in ``node/hub/migrations.py``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class LedgerConn(Protocol):
    """What a transaction hands out: ``execute`` with ``?`` placeholders (sqlite3's own API)."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Cursor: ...


class Ledger(ABC):
    """A ledger shared by a hub's threads (paho's and the pump's); transactions are serialised per process."""

    dialect: str
    location: str

    @abstractmethod
    def tx(self, durable: bool = True) -> AbstractContextManager[LedgerConn]:
        """One write transaction: commit at the end of the block, roll back on an exception.

        ``durable=False`` for what no ack promises (retained state documents, hellos): the backend
        may commit without waiting for the disk (PostgreSQL ``synchronous_commit = off``: a crash can
        lose the last such commits, never an acked report's).
        """

    @abstractmethod
    def read(self, fn: Callable[[LedgerConn], T]) -> T:
        """Run ``fn`` on a consistent view (no write intended)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def schema_version(self) -> int: ...

    def next_seq(self, conn: LedgerConn, node_id: str) -> int:
        """The next signing sequence number of ``node_id`` (inside a transaction; the row lock orders workers)."""
        conn.execute("INSERT INTO nodes(node_id) VALUES(?) ON CONFLICT DO NOTHING", (node_id,))
        return conn.execute("UPDATE nodes SET seq = seq + 1 WHERE node_id = ? RETURNING seq",
                            (node_id,)).fetchone()[0]

    def try_lease(self, name: str, holder: str, now_s: float, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until ``now_s + ttl_s``; False while another holds it.

        One statement, so two workers cannot both win: the insert or the conditional update either
        changes the row or it does not (PostgreSQL locks the row, SQLite the file).
        """
        with self.tx(durable=False) as conn:  # renewed every round; the per-job claim guards what it protects
            cur = conn.execute(
                "INSERT INTO leases(name, holder, expires_s) VALUES(?,?,?) ON CONFLICT(name) DO UPDATE"
                " SET holder = excluded.holder, expires_s = excluded.expires_s"
                " WHERE leases.holder = excluded.holder OR leases.expires_s < ?",
                (name, holder, now_s + ttl_s, now_s))
            return cur.rowcount == 1

    def release_lease(self, name: str, holder: str) -> None:
        with self.tx() as conn:
            conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))
