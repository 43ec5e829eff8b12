"""The Store: a SQLite file in WAL mode, migrated at open, used from one thread.

Why one thread: sqlite3 connections are not safe to share, and SQLite work must
never block the asyncio loop.  Every call goes through ``await store.run(fn)``
(or ``run_sync`` from a CLI or test), which runs ``fn(connection)`` on the
store's own worker thread.

Durability: ``synchronous=FULL`` so every commit is on disk before the call
returns, which is what the node needs before it acknowledges anything to
anyone.  High-rate data (telemetry) is batched by its writer into one commit
every few seconds to bound SD-card writes.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from node.store.migrations import MIGRATIONS

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreFull(RuntimeError):
    """The disk (or the configured page budget) is full: the write was not made."""


class StoreUnusable(RuntimeError):
    """The database cannot be opened or trusted; the message names the file and the fix.

    The node stops rather than start on an empty store: that would silently forget its jobs
    and history (the hub's replay protection survives in ``hub-seqs.json`` beside it)."""


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:  # SQLITE_FULL (and a few other errors) already rolled it back
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the newest version; return that version."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    newest = MIGRATIONS[-1][0] if MIGRATIONS else 0
    if current > newest:
        raise RuntimeError(f"store schema version {current} is newer than this printnode ({newest})")
    for version, description, sql in MIGRATIONS:
        if version <= current:
            continue
        log.info("store: migrating to version %d (%s)", version, description)
        with transaction(conn):
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
    return newest


class Store:
    """Owns the database connection and the one thread that uses it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._conn: sqlite3.Connection | None = None
        self._thread_id: int | None = None

    @property
    def schema_version(self) -> int:
        return self.run_sync(lambda c: c.execute("PRAGMA user_version").fetchone()[0])

    def open(self) -> Store:
        """Open (or create) the database; :class:`StoreUnusable` names the file and the fix."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size == 0:
                raise StoreUnusable(
                    f"{self.path} is empty (0 bytes): it was truncated (a copy cut short, a failing card). "
                    f"Fix: move it aside (mv {self.path} {self.path}.empty) and start again; the node then starts "
                    "with no job history but keeps the hub's replay protection")
            if not self.path.exists():
                self._create()
            self._executor.submit(self._open).result()
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            if _is_unwritable(exc):
                raise StoreUnusable(_unwritable_message(self.path, str(exc))) from None
            raise StoreUnusable(
                f"{self.path} cannot be read ({exc}): the file is damaged. Fix: stop the node, keep the file "
                f"(mv {self.path} {self.path}.damaged) and start again; `printnode doctor` checks a store") from None
        except PermissionError as exc:
            raise StoreUnusable(_unwritable_message(self.path, exc.strerror or str(exc))) from None
        except OSError as exc:
            raise StoreUnusable(f"{self.path}: {exc.strerror or exc} (is the card full or read-only?)") from None
        return self

    def _open(self) -> None:
        self._thread_id = threading.get_ident()
        self._conn = _connect(self.path)
        migrate(self._conn)

    def _create(self) -> None:
        """A new store is built beside its place and renamed in, so a file of 0 bytes at the
        store's path can only mean damage, never a creation cut short."""
        tmp = self.path.with_name(self.path.name + ".new")
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            leftover.unlink(missing_ok=True)
        conn = _connect(tmp)
        try:
            migrate(conn)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)

    def _close_quietly(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(_close).result()

    def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error:
                    pass
                self._conn.close()
                self._conn = None

        if self._conn is not None:
            self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise RuntimeError("store is not open")
        try:
            return fn(self._conn)
        except sqlite3.OperationalError as exc:
            if "full" in str(exc).lower():
                raise StoreFull(str(exc)) from exc
            raise

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the store thread without blocking the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """The same, for code that is not on an event loop (CLI tools, tests)."""
        if threading.get_ident() == self._thread_id:
            return self._call(fn)
        return self._executor.submit(self._call, fn).result()

    # small node facts (plate state, last sample time, ...) kept as text
    def get_meta(self, conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row["value"]

    def set_meta(self, conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                     (key, value))


def _is_unwritable(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def _unwritable_message(path: Path, why: str) -> str:
    return (f"cannot write the store {path} ({why}). Fix: make {path.parent} writable by the node's user "
            f"(sudo chown -R $(id -un): {path.parent}) or remount the card read-write")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_from_outside(path: Path, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
    """Query a store another process owns, read-only (WAL lets a second reader in): for
    ``printnode doctor``, benchmarks and tests that inspect a running daemon's store."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def integrity_check(path: Path) -> str:
    """SQLite's ``PRAGMA integrity_check`` of a store file: ``"ok"`` or the first problems found."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
