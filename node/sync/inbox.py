"""The inbox: what the node has accepted from the hub, so nothing is acted on twice.

Three durable facts (migration 4): message ids already handled with the answer given
(``sync_inbox``: a resent command is answered again, not executed again), hub sequence numbers
accepted (``sync_hub_seqs``: the replay window), and hub keys announced or retired
(``sync_hub_keys``: key rotation survives a restart).

The accepted sequence numbers are also kept in ``hub-seqs.json`` beside the database, written
and fsync'd after each acceptance: if the database is lost (a damaged card, a store moved aside
by its operator), the window is restored from there, so an old signed job cannot be replayed
into a node that forgot it.  No protocol change: the hub never knows.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from node.store import Store, transaction
from node.sync.protocol import REPLAY_WINDOW
from node.sync.signing import Verifier, key_id

log = logging.getLogger(__name__)
SEQS_FILE = "hub-seqs.json"


class Inbox:
    def __init__(self, store: Store, node_id: str, configured_keys: Iterable[str]) -> None:
        self.store = store
        self.node_id = node_id
        self.configured_keys = list(configured_keys)
        self.seqs_path = store.path.with_name(SEQS_FILE)

    # --- keys -------------------------------------------------------------------------------
    def _trusted(self, conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute("SELECT public_key, retired FROM sync_hub_keys").fetchall()
        retired = {r["public_key"] for r in rows if r["retired"]}
        announced = [r["public_key"] for r in rows if not r["retired"]]
        return [k for k in dict.fromkeys(self.configured_keys + announced) if k not in retired]

    async def verifier(self) -> tuple[Verifier, list[int]]:
        """A verifier over the currently trusted keys, and the accepted sequence numbers."""
        def _load(conn: sqlite3.Connection) -> tuple[list[str], list[int]]:
            seqs = {r[0] for r in conn.execute("SELECT seq FROM sync_hub_seqs")} | set(read_seqs(self.seqs_path))
            return self._trusted(conn), sorted(seqs)

        keys, seqs = await self.store.run(_load)
        return Verifier(self.node_id, keys), seqs

    async def trusted_keys(self) -> list[str]:
        return await self.store.run(self._trusted)

    async def rotate(self, new_public_key: str, retire_key_ids: list[str], now_s: float) -> None:
        """Trust ``new_public_key``; stop trusting keys whose id is in ``retire_key_ids``."""
        def _rotate(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute("INSERT INTO sync_hub_keys(public_key, key_id, added_s) VALUES(?,?,?)"
                             " ON CONFLICT(public_key) DO UPDATE SET retired = 0",
                             (new_public_key, key_id(new_public_key), now_s))
                for public in self._trusted(conn):
                    if key_id(public) in retire_key_ids and public != new_public_key:
                        conn.execute("INSERT INTO sync_hub_keys(public_key, key_id, added_s, retired)"
                                     " VALUES(?,?,?,1) ON CONFLICT(public_key) DO UPDATE SET retired = 1",
                                     (public, key_id(public), now_s))

        await self.store.run(_rotate)

    # --- messages and sequence numbers ------------------------------------------------------
    async def answer(self, msg_id: str) -> str | None:
        """The answer recorded for ``msg_id``, or None if it was never handled."""
        def _get(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT result FROM sync_inbox WHERE msg_id = ?", (msg_id,)).fetchone()
            return None if row is None else row["result"]

        return await self.store.run(_get)

    async def record(self, msg_id: str | None, kind: str, seq: int | None, result: str, now_s: float) -> None:
        """Remember a handled message and accept its sequence number (one transaction)."""
        def _record(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                if msg_id is not None:
                    conn.execute("INSERT INTO sync_inbox(msg_id, kind, received_s, result) VALUES(?,?,?,?)"
                                 " ON CONFLICT(msg_id) DO UPDATE SET result = excluded.result",
                                 (msg_id, kind, now_s, result))
                if seq is not None:
                    for kept in read_seqs(self.seqs_path):  # a store that lost its window gets it back
                        conn.execute("INSERT OR IGNORE INTO sync_hub_seqs(seq) VALUES(?)", (kept,))
                    conn.execute("INSERT OR IGNORE INTO sync_hub_seqs(seq) VALUES(?)", (seq,))
                    highest = conn.execute("SELECT MAX(seq) FROM sync_hub_seqs").fetchone()[0]
                    conn.execute("DELETE FROM sync_hub_seqs WHERE seq <= ?", (highest - REPLAY_WINDOW,))
            if seq is not None:
                write_seqs(self.seqs_path, [r[0] for r in conn.execute("SELECT seq FROM sync_hub_seqs")])

        await self.store.run(_record)


def read_seqs(path: Path) -> list[int]:
    """The sequence numbers kept beside the database ([] if there is no file or it is unreadable:
    the database's own window still applies)."""
    try:
        data = json.loads(path.read_text())
        return [int(seq) for seq in data["accepted_seqs"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("sync: %s is unreadable (%s); using the database's replay window only", path, exc)
        return []


def write_seqs(path: Path, seqs: list[int]) -> None:
    """Write the window atomically and durably: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        json.dump({"accepted_seqs": sorted(seqs)}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
