"""The durable outbox: every node→hub report is committed before it is sent, deleted only on ack.

Why: the broker and paho keep nothing the node could rely on (``docs/protocol.md``).  A row is
written with ``synchronous=FULL`` (the store's setting) before the client may publish it, and only a
hub ``down/ack`` naming its id deletes it.  Resending is always safe: the hub deduplicates by id.

Telemetry is the one kind that may be thinned: samples are averaged into fixed buckets
(:class:`TelemetryBatcher`), a batch of buckets becomes one compressed row, and when the telemetry
rows exceed the disk budget the oldest batches are downsampled first (:func:`enforce_telemetry_budget`).
Job states, records and command results are never thinned.
"""
from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field

from node.store import Store, transaction
from node.sync.protocol import (
    Report,
    TelemetryBatch,
    build_telemetry,
    decode_telemetry,
    dumps_compact,
    encode_telemetry,
    telemetry_rows,
)


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    id: str
    kind: str
    payload: bytes


def _insert(conn: sqlite3.Connection, msg_id: str, kind: str, payload: bytes, created_s: float,
            coalesce_key: str | None = None, t0_s: float | None = None, samples: int = 0,
            level: int = 0) -> None:
    conn.execute("INSERT INTO sync_outbox(id, kind, coalesce_key, payload, bytes, created_s, t0_s, samples, level)"
                 " VALUES(?,?,?,?,?,?,?,?,?)",
                 (msg_id, kind, coalesce_key, payload, len(payload), created_s, t0_s, samples, level))


def insert_report(conn: sqlite3.Connection, kind: str, report: Report, created_s: float) -> None:
    """Add a report inside the caller's transaction (to commit it with what it reports)."""
    _insert(conn, report.id, kind, dumps_compact(report), created_s)


def enforce_telemetry_budget(conn: sqlite3.Connection, budget_bytes: int) -> int:
    """Thin telemetry rows, oldest first, until their payload fits ``budget_bytes``; return steps taken.

    Step: the two oldest batches are merged into one that keeps every other sample (``level`` + 1,
    a new id; the hub keys telemetry by sample time, so a copy it already had adds nothing).  Merging
    also saves the fixed overhead of a batch (id, keys), which halving alone would not.  The oldest
    data thus becomes the coarsest; a last lone batch is halved, and a lone single sample deleted.
    Runs inside the caller's transaction.
    """
    steps = 0
    while True:
        used = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM sync_outbox WHERE kind = 'telemetry'").fetchone()[0]
        if used <= budget_bytes:
            return steps
        steps += 1
        oldest = conn.execute("SELECT seq, payload FROM sync_outbox WHERE kind = 'telemetry'"
                              " ORDER BY t0_s, seq LIMIT 2").fetchall()
        batches = [decode_telemetry(r["payload"]) for r in oldest]
        rows = [row for b in batches for row in telemetry_rows(b)]
        if len(oldest) == 1 and len(rows) <= 1:
            conn.execute("DELETE FROM sync_outbox WHERE seq = ?", (oldest[0]["seq"],))
            continue
        kept = sorted(rows, key=lambda r: r["t_s"] or 0.0)[::2]
        first = batches[0]
        thinned = build_telemetry(first.node_id, first.t_s, kept, first.step_s,
                                  level=max(b.level for b in batches) + 1)
        payload = encode_telemetry(thinned)
        conn.execute("UPDATE sync_outbox SET id = ?, payload = ?, bytes = ?, samples = ?, level = ?, t0_s = ?"
                     " WHERE seq = ?", (thinned.id, payload, len(payload), len(kept), thinned.level,
                                        thinned.t0_s, oldest[0]["seq"]))
        if len(oldest) == 2:
            conn.execute("DELETE FROM sync_outbox WHERE seq = ?", (oldest[1]["seq"],))


class Outbox:
    """The outbox table, used through the store's thread."""

    def __init__(self, store: Store, telemetry_budget_bytes: int) -> None:
        self.store = store
        self.telemetry_budget_bytes = telemetry_budget_bytes

    async def put(self, kind: str, report: Report, created_s: float, coalesce_key: str | None = None) -> str:
        """Commit one report; with ``coalesce_key`` it replaces any unacked row with the same key."""
        payload = dumps_compact(report)

        def _put(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                if coalesce_key is not None:
                    conn.execute("DELETE FROM sync_outbox WHERE coalesce_key = ?", (coalesce_key,))
                _insert(conn, report.id, kind, payload, created_s, coalesce_key)

        await self.store.run(_put)
        return report.id

    async def put_telemetry(self, batch: TelemetryBatch, created_s: float) -> str:
        payload = encode_telemetry(batch)
        budget = self.telemetry_budget_bytes

        def _put(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                _insert(conn, batch.id, "telemetry", payload, created_s, t0_s=batch.t0_s,
                        samples=len(batch.t_offsets), level=batch.level)
                enforce_telemetry_budget(conn, budget)

        await self.store.run(_put)
        return batch.id

    async def pending(self, limit: int = 100, exclude: frozenset[str] = frozenset()) -> list[OutboxRow]:
        """The oldest unacked rows (job states before the telemetry of the same age: seq order)."""
        def _pending(conn: sqlite3.Connection) -> list[OutboxRow]:
            rows = conn.execute("SELECT seq, id, kind, payload FROM sync_outbox ORDER BY seq LIMIT ?",
                                (limit + len(exclude),)).fetchall()
            return [OutboxRow(r["seq"], r["id"], r["kind"], bytes(r["payload"]))
                    for r in rows if r["id"] not in exclude][:limit]

        return await self.store.run(_pending)

    async def ack(self, ids: list[str]) -> int:
        """Delete acknowledged rows; unknown ids (already deleted, or thinned) are ignored."""
        def _ack(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                deleted = 0
                for msg_id in ids:
                    deleted += conn.execute("DELETE FROM sync_outbox WHERE id = ?", (msg_id,)).rowcount
                return deleted

        return await self.store.run(_ack) if ids else 0

    async def stats(self) -> dict[str, int]:
        def _stats(conn: sqlite3.Connection) -> dict[str, int]:
            row = conn.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0),"
                               " COALESCE(SUM(CASE WHEN kind = 'telemetry' THEN bytes END), 0)"
                               " FROM sync_outbox").fetchone()
            return {"messages": row[0], "bytes": row[1], "telemetry_bytes": row[2]}

        return await self.store.run(_stats)


@dataclass
class _Bucket:
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class TelemetryBatcher:
    """Averages samples into ``resolution_s`` buckets and hands out one batch per ``batch_s``.

    Pure (no clock, no I/O): time comes from the samples.  A batch is released when a sample
    arrives in a later batch period, or when :meth:`flush` is called (at stop).
    """

    FIELDS = ("pv_w", "pv_v", "battery_v", "battery_a", "load_w", "printer_w", "soc_pct")

    def __init__(self, node_id: str, resolution_s: float, batch_s: float) -> None:
        self.node_id = node_id
        self.resolution_s = resolution_s
        self.batch_s = max(batch_s, resolution_s)
        self._buckets: dict[int, _Bucket] = {}
        self._period: int | None = None

    def add(self, t_s: float, values: dict[str, float | None]) -> TelemetryBatch | None:
        if not math.isfinite(t_s):
            return None
        period = math.floor(t_s / self.batch_s)
        released = None
        if self._period is not None and period != self._period and self._buckets:
            released = self.flush(t_s)
        self._period = period
        bucket = self._buckets.setdefault(math.floor(t_s / self.resolution_s), _Bucket())
        for name in self.FIELDS:
            value = values.get(name)
            if value is None or not math.isfinite(value):
                continue
            bucket.sums[name] = bucket.sums.get(name, 0.0) + float(value)
            bucket.counts[name] = bucket.counts.get(name, 0) + 1
        return released

    def flush(self, now_s: float) -> TelemetryBatch | None:
        if not self._buckets:
            return None
        rows: list[dict[str, float | None]] = []
        for index in sorted(self._buckets):
            bucket = self._buckets[index]
            row: dict[str, float | None] = {"t_s": index * self.resolution_s}
            for name, total in bucket.sums.items():
                row[name] = total / bucket.counts[name]
            rows.append(row)
        self._buckets.clear()
        return build_telemetry(self.node_id, now_s, rows, self.resolution_s)

    @property
    def buffered(self) -> int:
        return len(self._buckets)
