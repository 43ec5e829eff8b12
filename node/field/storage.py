"""SD-card care for the store: WAL checkpoint policy, a size cap, free-space watch.

Why: an SD card wears per erase block and corrupts on power loss mid-write.
SQLite in WAL mode with ``synchronous=FULL`` (node/store/db.py) survives power
cuts; what remains is to keep the WAL file from growing without bound and to
write no more than needed:

* ``PRAGMA wal_autocheckpoint`` (default 1000 pages, about 4 MB) lets SQLite
  checkpoint by itself when the WAL grows; on top of that a PASSIVE checkpoint
  runs every ``checkpoint_interval_s`` (300 s) so a quiet node's WAL is folded
  back; with ``journal_size_limit`` the next commit, which restarts the WAL
  from its beginning, truncates the file to ``journal_size_limit_mb``.  PASSIVE never waits
  for readers, so it cannot stall the store thread
  (https://www.sqlite.org/pragma.html#pragma_wal_checkpoint).
* ``max_db_mb`` caps the database with ``PRAGMA max_page_count``: a full
  store raises :class:`node.store.StoreFull` on the write that does not fit,
  nothing already committed is lost, and the daemon keeps running.
* Free space in the state directory is checked with each checkpoint and shown
  in ``status`` (and by ``printnode doctor``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from node.field.config import StorageSection
from node.node import Component, Node
from node.store import Store

log = logging.getLogger(__name__)


def apply_pragmas(conn: sqlite3.Connection, config: StorageSection) -> dict[str, int]:
    """Set the checkpoint and size pragmas on the store's connection; return what SQLite reports."""
    conn.execute(f"PRAGMA wal_autocheckpoint = {int(config.wal_autocheckpoint_pages)}")
    conn.execute(f"PRAGMA journal_size_limit = {int(config.journal_size_limit_mb * 1024 * 1024)}")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    if config.max_db_mb is not None:
        pages = max(1, int(config.max_db_mb * 1024 * 1024 // page_size))
        conn.execute(f"PRAGMA max_page_count = {pages}")
    return {
        "page_size": page_size,
        "max_page_count": conn.execute("PRAGMA max_page_count").fetchone()[0],
        "wal_autocheckpoint": conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
    }


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """PRAGMA wal_checkpoint(PASSIVE): (busy, WAL frames, frames checkpointed)."""
    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def free_mb(path: Path) -> float:
    return shutil.disk_usage(path).free / (1024 * 1024)


class StorageCare(Component):
    name = "storage"
    section = "storage"

    def __init__(self, node: Node, config: StorageSection, store: Store) -> None:
        super().__init__(node, config)
        self.config: StorageSection = config
        self.store = store
        self.pragmas: dict[str, int] = {}
        self.checkpoints = 0
        self.last_checkpoint: tuple[int, int, int] | None = None
        self.free_mb: float | None = None
        self.low_space = False

    async def start(self) -> None:
        self.pragmas = await self.store.run(lambda c: apply_pragmas(c, self.config))
        self.node.spawn(self._loop(), "store-checkpoint")

    async def _loop(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self.config.checkpoint_interval_s)

    async def run_once(self) -> None:
        try:
            self.last_checkpoint = await self.store.run(checkpoint)
            self.checkpoints += 1
        except Exception as exc:  # a failed checkpoint is retried next time; the data is safe in the WAL
            log.warning("WAL checkpoint failed: %s", exc)
        self.free_mb = await asyncio.to_thread(free_mb, self.store.path.parent)
        low = self.free_mb < self.config.min_free_mb
        if low and not self.low_space:
            log.warning("only %.0f MB free in %s (storage.min_free_mb = %.0f)", self.free_mb,
                        self.store.path.parent, self.config.min_free_mb)
        self.low_space = low

    def status(self) -> dict[str, Any]:
        db = self.store.path
        wal = db.with_name(db.name + "-wal")
        return {
            "db_bytes": db.stat().st_size if db.exists() else None,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "max_db_bytes": (self.pragmas.get("max_page_count", 0) * self.pragmas.get("page_size", 0)) or None,
            "checkpoints": self.checkpoints,
            "last_checkpoint": self.last_checkpoint,
            "free_mb": None if self.free_mb is None else round(self.free_mb, 1),
            "low_space": self.low_space,
            "process_write_bytes": process_write_bytes(),
        }


def process_write_bytes(pid: int | None = None) -> int | None:
    """Bytes this process caused to be written to storage (``/proc/<pid>/io`` write_bytes)."""
    try:
        with open(f"/proc/{pid or os.getpid()}/io") as handle:
            for line in handle:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
