"""The journal encoding, the log rate limit, and the store's checkpoint policy and size cap."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import struct
from pathlib import Path

import pytest

from node.clock import ManualClock
from node.field.config import StorageSection
from node.field.journal import (
    JOB_ID,
    RateLimitFilter,
    component_of,
    encode_field,
    job_context,
    job_id_of,
    journal_fields,
)
from node.field.storage import StorageCare, process_write_bytes
from node.jobs import Jobs
from node.node import Node, NodeSection
from node.store import Store, StoreFull


def record(msg: str, *args: object, name: str = "node.printer.worker", level: int = logging.INFO,
           **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 10, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_native_protocol_fields() -> None:
    assert encode_field("MESSAGE", "hello") == b"MESSAGE=hello\n"
    multi = encode_field("MESSAGE", "two\nlines")
    assert multi == b"MESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\n"
    fields = journal_fields(record("printer: %s", "gone", level=logging.WARNING), "printer: gone")
    assert fields["PRIORITY"] == "4" and fields["COMPONENT"] == "printer" and "JOB_ID" not in fields


def test_component_and_job_id_sources() -> None:
    assert component_of("node.hw.relay") == "hw" and component_of("node.daemon") == "daemon"
    assert component_of("node.field.timesync") == "timesync"
    assert component_of("paho.mqtt") == "paho.mqtt"
    assert job_id_of(record("x", job_id="abc")) == "abc"
    assert job_id_of(record("job %s started", "0123456789ab")) == "0123456789ab"
    assert job_id_of(record("nothing about jobs")) is None
    with job_context("fromctx"):
        assert job_id_of(record("anything")) == "fromctx"
    assert JOB_ID.get() is None


def test_rate_limit_per_call_site_and_summary() -> None:
    now = [0.0]
    limit = RateLimitFilter(burst=3, interval_s=60, monotonic=lambda: now[0])
    passed = [limit.filter(record("printer: %s", i, level=logging.WARNING)) for i in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert limit.filter(record("another site", level=logging.WARNING)), "other call sites are not limited"
    assert all(limit.filter(record("job %s: progress", "j")) for _ in range(50)), "info keeps its own cadence"
    now[0] = 61.0
    summary = record("printer: %s", "again", level=logging.WARNING)
    assert limit.filter(summary) and "(7 similar messages suppressed)" in summary.getMessage()


def test_checkpoint_truncates_the_wal_and_the_cap_refuses_writes(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store(tmp_path / "s.sqlite3").open()
        node = Node(NodeSection(), ManualClock())
        care = node.add(StorageCare(node, StorageSection(journal_size_limit_mb=0.0, max_db_mb=0.2,
                                                       wal_autocheckpoint_pages=0), store))
        jobs = node.add(Jobs(node, store))
        await node.start()
        try:
            assert care.pragmas["wal_autocheckpoint"] == 0
            for i in range(20):
                await jobs.create(f"job {i}", "cli")
            wal = tmp_path / "s.sqlite3-wal"
            grown = wal.stat().st_size
            assert grown > 0
            await care.run_once()
            busy, frames, done = care.last_checkpoint
            assert busy == 0 and frames == done  # everything folded back into the database
            await jobs.create("after the checkpoint", "cli")  # the next commit restarts the WAL ...
            assert wal.stat().st_size < grown / 4  # ... and truncates the file (journal_size_limit)
            with pytest.raises(StoreFull):
                for i in range(5000):
                    await jobs.create("x" * 200 + str(i), "cli")
            count = await store.run(lambda c: c.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
            assert count >= 20
            status = care.status()
            assert status["max_db_bytes"] <= 0.2 * 2**20 and status["free_mb"] > 0
        finally:
            await node.stop()
            store.close()
        conn = sqlite3.connect(tmp_path / "s.sqlite3")
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == count
        conn.close()
    asyncio.run(scenario())


def test_process_write_bytes_reads_proc() -> None:
    value = process_write_bytes()
    assert value is None or value >= 0
