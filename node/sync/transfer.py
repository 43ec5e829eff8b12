"""Resumable chunked pull of a job's G-code over MQTT.

The node asks for ``(offset, length)`` ranges, keeps ``window`` requests in flight, writes each
chunk at its offset into ``<job>.part`` and commits to SQLite the length of the contiguous prefix
it has fsync'd (``sync_transfers.done_bytes``).  After a disconnect or a restart it starts again
from that prefix; a request unanswered for ``timeout_s`` is sent again (a chunk may be lost:
``down/chunk`` is QoS 0).  A finished file is hashed in full and compared with the manifest's
sha256 before anyone may queue the job.

The request bookkeeping (:class:`TransferPlan`) is pure; :class:`Transfers` adds the table and
the file, with blocking I/O in a thread.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from node.store import Store, transaction
from node.sync.protocol import ChunkRequest, new_id


@dataclass
class TransferPlan:
    """Which ranges to request next, given what arrived; no I/O."""

    job_id: str
    total_bytes: int
    chunk_bytes: int
    done_bytes: int = 0  # contiguous prefix on disk
    next_offset: int = 0  # first byte never requested (since the last resume)
    in_flight: dict[int, tuple[str, float]] = field(default_factory=dict)  # offset -> (req_id, sent monotonic)
    arrived: dict[int, int] = field(default_factory=dict)  # offset -> length, beyond done_bytes
    stalled: str | None = None  # the hub refused to serve: wait for the next connect before asking again

    def __post_init__(self) -> None:
        self.next_offset = max(self.next_offset, self.done_bytes)

    @property
    def complete(self) -> bool:
        return self.done_bytes >= self.total_bytes

    def resume(self) -> None:
        """Forget requests in flight (after a reconnect): ask again from the done prefix."""
        self.in_flight.clear()
        self.stalled = None
        self.arrived = {o: n for o, n in self.arrived.items() if o >= self.done_bytes}
        self.next_offset = self.done_bytes

    def requests(self, window: int, now_s: float, timeout_s: float) -> list[ChunkRequest]:
        """New requests to send: timed-out ones again, then fresh ranges up to ``window`` in flight."""
        out: list[ChunkRequest] = []
        if self.stalled:
            return out
        for offset, (_, sent_s) in sorted(self.in_flight.items()):
            if now_s - sent_s >= timeout_s:
                req = ChunkRequest(job_id=self.job_id, offset=offset,
                                   length=min(self.chunk_bytes, self.total_bytes - offset), req_id=new_id())
                self.in_flight[offset] = (req.req_id, now_s)
                out.append(req)
        while len(self.in_flight) < window and self.next_offset < self.total_bytes:
            offset = self.next_offset
            if offset not in self.arrived:
                req = ChunkRequest(job_id=self.job_id, offset=offset,
                                   length=min(self.chunk_bytes, self.total_bytes - offset), req_id=new_id())
                self.in_flight[offset] = (req.req_id, now_s)
                out.append(req)
            self.next_offset = offset + self.chunk_bytes
        return out

    def accept(self, offset: int, length: int) -> bool:
        """Record a chunk that arrived; False if it is not one we asked for (ignore it)."""
        if offset not in self.in_flight and offset not in self.arrived:
            return False
        expected = min(self.chunk_bytes, self.total_bytes - offset)
        if length != expected:
            return False
        self.in_flight.pop(offset, None)
        self.arrived[offset] = length
        return True

    def advance(self) -> int:
        """Move the contiguous prefix over arrived chunks; return the new ``done_bytes``."""
        while self.done_bytes in self.arrived:
            self.done_bytes += self.arrived.pop(self.done_bytes)
        return self.done_bytes


@dataclass(frozen=True)
class TransferRow:
    job_id: str
    file_sha256: str
    total_bytes: int
    done_bytes: int
    part_path: str
    final_path: str
    attempts: int


def _write_at(path: str, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class Transfers:
    """The transfers table plus in-memory plans for the active ones."""

    def __init__(self, store: Store, files_dir: Path, chunk_bytes: int, window: int, timeout_s: float) -> None:
        self.store = store
        self.files_dir = Path(files_dir)
        self.chunk_bytes = chunk_bytes
        self.window = window
        self.timeout_s = timeout_s
        self.plans: dict[str, TransferPlan] = {}
        self._rows: dict[str, TransferRow] = {}
        self.retries = 0  # requests sent again after chunk_timeout (lost request or reply)

    async def load(self) -> list[TransferRow]:
        """Read unfinished transfers (at start): they resume from their committed prefix."""
        def _load(conn: sqlite3.Connection) -> list[TransferRow]:
            return [TransferRow(**dict(r)) for r in conn.execute(
                "SELECT job_id, file_sha256, total_bytes, done_bytes, part_path, final_path, attempts"
                " FROM sync_transfers ORDER BY started_s").fetchall()]

        rows = await self.store.run(_load)
        for row in rows:
            self._activate(row)
        return rows

    def _activate(self, row: TransferRow) -> None:
        self._rows[row.job_id] = row
        self.plans[row.job_id] = TransferPlan(row.job_id, row.total_bytes, self.chunk_bytes, done_bytes=row.done_bytes)

    async def begin(self, job_id: str, file_sha256: str, total_bytes: int, final_path: Path, now_s: float,
                    attempts: int = 1) -> TransferRow:
        self.files_dir.mkdir(parents=True, exist_ok=True)
        part = str(self.files_dir / f"{job_id}.part")
        await asyncio.to_thread(lambda: open(part, "wb").close())
        row = TransferRow(job_id, file_sha256, total_bytes, 0, part, str(final_path), attempts)

        def _begin(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute("INSERT OR REPLACE INTO sync_transfers(job_id, file_sha256, total_bytes, done_bytes,"
                             " part_path, final_path, attempts, started_s, updated_s) VALUES(?,?,?,?,?,?,?,?,?)",
                             (job_id, file_sha256, total_bytes, 0, part, str(final_path), attempts, now_s, now_s))

        await self.store.run(_begin)
        self._activate(row)
        return row

    def row(self, job_id: str) -> TransferRow | None:
        return self._rows.get(job_id)

    def requests(self) -> list[ChunkRequest]:
        now = time.monotonic()
        out: list[ChunkRequest] = []
        for plan in self.plans.values():
            if not plan.complete:
                before = set(plan.in_flight)
                fresh = plan.requests(self.window, now, self.timeout_s)
                self.retries += sum(1 for r in fresh if r.offset in before)
                out.extend(fresh)
        return out

    def stall(self, job_id: str, why: str) -> bool:
        """The hub cannot serve this file now; True the first time (log it once)."""
        plan = self.plans.get(job_id)
        if plan is None or plan.stalled:
            return False
        plan.stalled = why
        plan.in_flight.clear()
        return True

    def resume_all(self) -> None:
        for plan in self.plans.values():
            plan.resume()

    async def on_chunk(self, job_id: str, offset: int, data: bytes, now_s: float) -> bool:
        """Store one chunk; return True when the file is complete (not yet verified)."""
        plan, row = self.plans.get(job_id), self._rows.get(job_id)
        if plan is None or row is None or not plan.accept(offset, len(data)):
            return False
        await asyncio.to_thread(_write_at, row.part_path, offset, data)
        before = plan.done_bytes
        done = plan.advance()
        if done != before:
            await self.store.run(lambda c: c.execute(
                "UPDATE sync_transfers SET done_bytes = ?, updated_s = ? WHERE job_id = ?", (done, now_s, job_id)))
        return plan.complete

    async def finish(self, job_id: str) -> tuple[bool, str]:
        """Verify the sha256; on success move the file to its final path. Returns (ok, actual sha256)."""
        row = self._rows[job_id]

        def _verify() -> str:
            actual = sha256_file(row.part_path)
            if actual == row.file_sha256:
                os.replace(row.part_path, row.final_path)
                dir_fd = os.open(os.path.dirname(row.final_path) or ".", os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            return actual

        actual = await asyncio.to_thread(_verify)
        return actual == row.file_sha256, actual

    async def drop(self, job_id: str) -> None:
        """Forget a transfer (done, failed or cancelled) and its partial file."""
        row = self._rows.pop(job_id, None)
        self.plans.pop(job_id, None)
        await self.store.run(lambda c: c.execute("DELETE FROM sync_transfers WHERE job_id = ?", (job_id,)))
        if row is not None and os.path.exists(row.part_path):
            await asyncio.to_thread(os.remove, row.part_path)

    def status(self) -> dict[str, dict[str, int]]:
        return {j: {"done_bytes": p.done_bytes, "total_bytes": p.total_bytes} for j, p in self.plans.items()}
