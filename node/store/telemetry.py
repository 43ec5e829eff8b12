"""Telemetry history: raw samples for 24 h, 1-minute means for 30 days, 15-minute means for a year.

Bounds (at one sample a second, the VE.Direct rate; times are sim time):

=============  ===========  ===============  ===================
table          rows kept    ~bytes a row     ~size on disk
=============  ===========  ===============  ===================
telemetry_raw  86 400       ~110 (+ index)   ~12 MB
telemetry_1m   43 200       ~130             ~6 MB
telemetry_15m  35 040       ~130             ~5 MB
=============  ===========  ===============  ===================

so about 25 MB in steady state, whatever the uptime.  Write rate: the recorder keeps
rows in memory and the Telemetry component commits them in ONE transaction every
``store.batch_commit_s`` real seconds (default 5 s: ~17 000 commits a day instead of
~86 000, each a few pages), which bounds SD-card wear.  The 1- and 15-minute rows of the
current interval are rewritten at each commit, so a power cut loses at most one batch.
Old rows are pruned once an hour (sim time).

The means skip stale samples (the device was silent; the values are the last known);
raw rows keep them, flagged, so an outage is visible in the history.
Energy columns integrate power over the time between samples (gaps capped at 60 s).
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from node.events import TelemetrySample
from node.store.db import transaction

MEAN_FIELDS = ("pv_w", "pv_v", "battery_v", "battery_a", "load_w", "printer_w", "soc_pct")
RAW_FIELDS = ("t_s", "source", *MEAN_FIELDS, "charge_state", "error", "stale")
RETENTION_S = {"telemetry_raw": 86400.0, "telemetry_1m": 30 * 86400.0, "telemetry_15m": 365 * 86400.0}
BUCKET_S = {"telemetry_1m": 60.0, "telemetry_15m": 900.0}
MAX_INTEGRATION_GAP_S = 60.0
PRUNE_EVERY_S = 3600.0


@dataclass
class _Bucket:
    start_s: float
    samples: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    battery_v_min: float | None = None
    battery_v_max: float | None = None
    pv_wh: float = 0.0
    charge_wh: float = 0.0
    discharge_wh: float = 0.0

    def add(self, sample: TelemetrySample, dt_s: float) -> None:
        self.samples += 1
        for name in MEAN_FIELDS:
            value = getattr(sample, name)
            if value is not None:
                self.sums[name] = self.sums.get(name, 0.0) + value
                self.counts[name] = self.counts.get(name, 0) + 1
        if sample.battery_v is not None:
            v = sample.battery_v
            self.battery_v_min = v if self.battery_v_min is None else min(v, self.battery_v_min)
            self.battery_v_max = v if self.battery_v_max is None else max(v, self.battery_v_max)
        hours = dt_s / 3600.0
        if sample.pv_w is not None:
            self.pv_wh += sample.pv_w * hours
        if sample.battery_v is not None and sample.battery_a is not None:
            battery_w = sample.battery_v * sample.battery_a
            if battery_w >= 0:
                self.charge_wh += battery_w * hours
            else:
                self.discharge_wh -= battery_w * hours

    def row(self) -> tuple[Any, ...]:
        means = [self.sums[n] / self.counts[n] if self.counts.get(n) else None for n in MEAN_FIELDS]
        return (self.start_s, self.samples, *means, self.battery_v_min, self.battery_v_max,
                self.pv_wh, self.charge_wh, self.discharge_wh)


@dataclass
class TelemetryBatch:
    raw_rows: list[tuple[Any, ...]]
    bucket_rows: dict[str, list[tuple[Any, ...]]]
    prune_before_s: dict[str, float] | None


class TelemetryRecorder:
    """Pure: collects samples into raw rows and running buckets; :meth:`take_batch` empties it."""

    def __init__(self) -> None:
        self._raw: list[tuple[Any, ...]] = []
        self._current: dict[str, _Bucket] = {}
        self._finished: dict[str, list[tuple[Any, ...]]] = {table: [] for table in BUCKET_S}
        self._last_t_s: float | None = None
        self._last_prune_s: float | None = None

    def add(self, sample: TelemetrySample) -> None:
        self._raw.append(tuple(int(sample.stale) if n == "stale" else getattr(sample, n) for n in RAW_FIELDS))
        if sample.stale:
            return
        dt_s = 0.0 if self._last_t_s is None else min(max(0.0, sample.t_s - self._last_t_s), MAX_INTEGRATION_GAP_S)
        self._last_t_s = sample.t_s
        for table, width_s in BUCKET_S.items():
            start_s = sample.t_s - sample.t_s % width_s
            bucket = self._current.get(table)
            if bucket is not None and bucket.start_s != start_s:
                self._finished[table].append(bucket.row())
                bucket = None
            if bucket is None:
                bucket = self._current[table] = _Bucket(start_s)
            bucket.add(sample, dt_s)

    @property
    def pending(self) -> int:
        return len(self._raw)

    def take_batch(self) -> TelemetryBatch:
        bucket_rows = {table: rows + ([self._current[table].row()] if table in self._current else [])
                       for table, rows in self._finished.items()}
        prune = None
        now_s = self._last_t_s
        if now_s is not None and (self._last_prune_s is None or now_s - self._last_prune_s >= PRUNE_EVERY_S):
            prune = {table: now_s - keep_s for table, keep_s in RETENTION_S.items()}
            self._last_prune_s = now_s
        batch = TelemetryBatch(self._raw, bucket_rows, prune)
        self._raw = []
        self._finished = {table: [] for table in BUCKET_S}
        return batch


_BUCKET_COLUMNS = ("t_s", "samples", *MEAN_FIELDS, "battery_v_min", "battery_v_max", "pv_wh", "charge_wh",
                   "discharge_wh")


def write_batch(conn: sqlite3.Connection, batch: TelemetryBatch) -> int:
    """One transaction: raw inserts, bucket upserts, pruning.  Returns rows written."""
    written = 0
    with transaction(conn):
        if batch.raw_rows:
            conn.executemany(f"INSERT INTO telemetry_raw({', '.join(RAW_FIELDS)}) "
                             f"VALUES({', '.join('?' * len(RAW_FIELDS))})", batch.raw_rows)
            written += len(batch.raw_rows)
        for table, rows in batch.bucket_rows.items():
            if rows:
                conn.executemany(f"INSERT OR REPLACE INTO {table}({', '.join(_BUCKET_COLUMNS)}) "
                                 f"VALUES({', '.join('?' * len(_BUCKET_COLUMNS))})", rows)
                written += len(rows)
        for table, before_s in (batch.prune_before_s or {}).items():
            conn.execute(f"DELETE FROM {table} WHERE t_s < ?", (before_s,))
    return written


def history(conn: sqlite3.Connection, table: str, since_s: float, until_s: float | None = None) -> list[dict[str, Any]]:
    """Rows of one table between two sim times, oldest first (planner, status, hub sync)."""
    if table not in RETENTION_S:
        raise ValueError(f"unknown telemetry table {table!r}")
    rows = conn.execute(f"SELECT * FROM {table} WHERE t_s >= ? AND t_s < ? ORDER BY t_s",
                        (since_s, float("inf") if until_s is None else until_s)).fetchall()
    return [dict(row) for row in rows]
