"""The analysis component: analyses in a thread, learns the printing time of completed jobs."""
from __future__ import annotations

import asyncio

import pytest

from node.clock import ManualClock
from node.gcode.config import AnalysisSection
from node.gcode.service import AnalysisService
from node.jobs import Jobs, JobState, PauseReason
from node.node import Node, NodeSection
from node.store.db import Store
from tests.gcode.conftest import square_layers


def test_completed_job_is_recorded_with_its_printing_time(tmp_path, write, ender3):
    async def scenario() -> tuple[list, dict]:
        clock = ManualClock()
        node = Node(NodeSection(), clock)
        store = Store(tmp_path / "node.db").open()
        try:
            jobs = node.add(Jobs(node, store))
            service = node.add(AnalysisService(node, AnalysisSection(ambient_c=20.0), store, ender3))
            await node.start()
            path = write("M190 S60\n" + square_layers(5))
            result = await service.analyze(path)
            assert result.file_sha256 and result.ambient_c == 20.0
            job = await jobs.create("cube", "cli", file_path=str(path), file_sha256=result.file_sha256)
            other = await jobs.create("no analysis", "cli", file_sha256="0" * 64)
            await jobs.transition(job.id, JobState.PRINTING, "start")
            await clock.advance(100)
            await jobs.transition(job.id, JobState.PAUSED, "pause", pause_reason=PauseReason.USER)
            await clock.advance(3600)
            await jobs.transition(job.id, JobState.PRINTING, "resume")
            await clock.advance(30)
            await jobs.transition(job.id, JobState.COMPLETED, "done")
            await jobs.transition(other.id, JobState.PRINTING, "start")
            await clock.advance(10)
            await jobs.transition(other.id, JobState.COMPLETED, "done")
            rows = await store.run(lambda c: [dict(r) for r in c.execute("SELECT * FROM print_history")])
            status = service.status()
            await node.stop()
            return rows, {"status": status, "estimate": result.motion_seconds + result.heatup_seconds}
        finally:
            store.close()

    rows, info = asyncio.run(scenario())
    assert len(rows) == 1
    assert rows[0]["measured_s"] == pytest.approx(130.0)
    assert rows[0]["estimated_s"] == pytest.approx(info["estimate"])
    assert rows[0]["printer_profile"] == "ender3"
    assert info["status"]["prints_recorded"] == 1


def test_a_job_with_nothing_to_time_completes_without_an_error(tmp_path, write, ender3, caplog):
    """Issue #14, finding 10: a job whose estimate is zero (no moves, no heating) raised
    ValueError when it completed."""
    async def scenario() -> int:
        clock = ManualClock()
        node = Node(NodeSection(), clock)
        store = Store(tmp_path / "node.db").open()
        try:
            jobs = node.add(Jobs(node, store))
            service = node.add(AnalysisService(node, AnalysisSection(), store, ender3))
            await node.start()
            path = write("M117 nothing to do\nM107\n")
            result = await service.analyze(path)
            assert result.motion_seconds + result.heatup_seconds == 0
            job = await jobs.create("noop", "cli", file_path=str(path), file_sha256=result.file_sha256)
            await jobs.transition(job.id, JobState.PRINTING, "start")
            await clock.advance(5)
            await jobs.transition(job.id, JobState.COMPLETED, "done")
            await node.stop()
            return service.status()["prints_recorded"]
        finally:
            store.close()

    assert asyncio.run(scenario()) == 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"], [r.getMessage() for r in caplog.records]
