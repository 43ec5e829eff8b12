"""The outbox on a real SQLite file: committed, acked, coalesced, telemetry thinned oldest-first."""
from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from node.store import Store
from node.sync import protocol as p
from node.sync.outbox import Outbox, TelemetryBatcher, enforce_telemetry_budget
from node.sync.transfer import TransferPlan


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "node.sqlite").open()
    yield s
    s.close()


def state_report(job: str, version: int) -> p.JobStateReport:
    return p.JobStateReport(node_id="n1", t_s=1.0, job_id=job, version=version, node_state="queued",
                            wire_state=p.WireState.QUEUED)


def batch(t0: float, samples: int) -> p.TelemetryBatch:
    rows = [{"t_s": t0 + 60 * i, "pv_w": 100.0 + (i * 37) % 91, "battery_v": 12.5 + i % 7 / 100, "soc_pct": 50.0}
            for i in range(samples)]
    return p.build_telemetry("n1", t0, rows, 60.0)


def test_rows_survive_reopening_and_only_an_ack_deletes_them(tmp_path: Path):
    async def main() -> None:
        store = Store(tmp_path / "node.sqlite").open()
        outbox = Outbox(store, 10_000_000)
        ids = [await outbox.put("job_state", state_report("j", v), 1.0) for v in (1, 2, 3)]
        store.close()
        store = Store(tmp_path / "node.sqlite").open()
        outbox = Outbox(store, 10_000_000)
        assert [r.id for r in await outbox.pending()] == ids
        assert await outbox.ack([ids[1], "f" * 32]) == 1
        assert [r.id for r in await outbox.pending()] == [ids[0], ids[2]]
        assert [r.id for r in await outbox.pending(exclude=frozenset({ids[0]}))] == [ids[2]]
        store.close()

    asyncio.run(main())


def test_coalesced_reports_keep_only_the_latest(store: Store):
    async def main() -> None:
        outbox = Outbox(store, 10_000_000)
        for pct in (10.0, 20.0, 30.0):
            await outbox.put("job_progress", p.JobProgressReport(
                node_id="n1", t_s=pct, job_id="j", percent=pct, bytes_done=0, bytes_total=1, elapsed_s=1),
                pct, coalesce_key="progress:j")
        rows = await outbox.pending()
        assert len(rows) == 1 and p.JobProgressReport.model_validate_json(rows[0].payload).percent == 30.0

    asyncio.run(main())


def test_telemetry_budget_thins_oldest_first_and_never_touches_job_states(store: Store):
    async def main() -> None:
        outbox = Outbox(store, 10_000_000)
        await outbox.put("job_state", state_report("j", 1), 0.0)
        for day in range(6):
            await outbox.put_telemetry(batch(1_000_000.0 + day * 86400, 60), 0.0)
        full = (await outbox.stats())["telemetry_bytes"]

        def thin(conn: sqlite3.Connection) -> list[tuple[float, int, int]]:
            conn.execute("BEGIN IMMEDIATE")
            enforce_telemetry_budget(conn, int(full * 0.7))
            conn.execute("COMMIT")
            return [(r["t0_s"], r["samples"], r["level"]) for r in
                    conn.execute("SELECT t0_s, samples, level FROM sync_outbox WHERE kind = 'telemetry' ORDER BY t0_s")]

        rows = await store.run(thin)
        assert (await outbox.stats())["telemetry_bytes"] <= full * 0.7
        levels = [level for _, _, level in rows]
        assert levels[0] > 0 and levels[-1] == 0  # the oldest is the coarsest, the newest untouched
        assert levels == sorted(levels, reverse=True)
        kinds = [r.kind for r in await outbox.pending(1000)]
        assert kinds.count("job_state") == 1

        def squeeze(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            enforce_telemetry_budget(conn, 1)
            conn.execute("COMMIT")
            return conn.execute("SELECT COUNT(*) FROM sync_outbox WHERE kind = 'telemetry'").fetchone()[0]

        assert await store.run(squeeze) == 0
        assert [r.kind for r in await outbox.pending(1000)] == ["job_state"]

    asyncio.run(main())


def test_thinned_batch_keeps_every_other_sample_with_original_times():
    b = batch(1_000_000.0, 10)
    rows = p.telemetry_rows(b)[::2]
    thinned = p.build_telemetry("n1", 0.0, rows, 60.0, level=1)
    assert [r["t_s"] for r in p.telemetry_rows(thinned)] == [1_000_000.0 + 120 * i for i in range(5)]


def test_batcher_averages_buckets_and_releases_one_batch_per_period():
    batcher = TelemetryBatcher("n1", resolution_s=60, batch_s=600)
    released = []
    for i in range(0, 1300, 10):  # a sample every 10 s for ~21 minutes
        out = batcher.add(1_000_200.0 + i, {"pv_w": float(i % 60), "soc_pct": 50.0})
        if out:
            released.append(out)
    assert len(released) == 2
    first = p.telemetry_rows(released[0])
    assert all(r["t_s"] % 60 == 0 for r in first)
    assert first[0]["pv_w"] == pytest.approx(25.0, abs=0.05)  # mean of 0,10,...,50
    assert batcher.flush(0.0) is not None and batcher.flush(0.0) is None


def test_transfer_plan_windows_resends_and_advances_only_over_a_contiguous_prefix():
    plan = TransferPlan("j", total_bytes=1000, chunk_bytes=300)
    first = plan.requests(window=2, now_s=0.0, timeout_s=5.0)
    assert [(r.offset, r.length) for r in first] == [(0, 300), (300, 300)]
    assert plan.accept(300, 300) and plan.advance() == 0  # gap at 0
    assert [(r.offset, r.length) for r in plan.requests(2, 1.0, 5.0)] == [(600, 300)]
    assert [r.offset for r in plan.requests(2, 6.0, 5.0)] == [0, 600]  # timed out: asked again
    assert not plan.accept(0, 299)  # wrong length
    assert plan.accept(0, 300) and plan.advance() == 600
    assert not plan.accept(0, 300)  # duplicate of a done chunk: ignored
    plan.resume()
    assert [(r.offset, r.length) for r in plan.requests(4, 7.0, 5.0)] == [(600, 300), (900, 100)]
    assert plan.accept(900, 100) and plan.accept(600, 300) and plan.advance() == 1000 and plan.complete
