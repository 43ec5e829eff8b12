"""The G-code analysis as a daemon component (kept apart so the library imports stay light)."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

from node.events import JobAnalysed, JobStateChanged, QueueChanged
from node.gcode.analysis import ANALYSIS_VERSION, Analysis, GcodeError, analyze_cached, profile_key
from node.gcode.config import AnalysisSection
from node.gcode.correction import record_print
from node.jobs import RUNNABLE_STATES, Job, Jobs
from node.node import Component, Node
from node.printer.profile import PrinterProfile
from node.store.db import Store, transaction

log = logging.getLogger(__name__)


def printing_seconds(conn: sqlite3.Connection, job_id: str, finished_s: float) -> float:
    """Time a job spent in ``printing`` (pauses, suspensions and interruptions left out)."""
    rows = conn.execute("SELECT to_state, t_s FROM job_transitions WHERE job_id = ? ORDER BY version",
                        (job_id,)).fetchall()
    total_s = 0.0
    since_s: float | None = None
    for to_state, t_s in rows:
        if to_state == "printing" and since_s is None:
            since_s = t_s
        elif to_state != "printing" and since_s is not None:
            total_s += t_s - since_s
            since_s = None
    if since_s is not None:
        total_s += finished_s - since_s
    return total_s


class AnalysisService(Component):
    """The analysis as a daemon component: cached analyses for the queue, learning from prints.

    ``await service.analyze(path)`` runs ``analyze_cached`` in a thread (never on
    the loop).  On ``job_state_changed`` to ``completed`` it stores the job's
    printing time beside the raw estimate of its file (``print_history``), which
    the bounded correction (``node.gcode.correction``) learns from.
    """

    name = "analysis"
    section = "analysis"

    def __init__(self, node: Node, config: AnalysisSection, store: Store, profile: PrinterProfile,
                 jobs: Jobs | None = None) -> None:
        super().__init__(node, config)
        self.store = store
        self.profile = profile
        self.jobs = jobs
        self.ambient_c = config.ambient_c
        self.recorded = 0
        self._by_sha256: dict[str, Analysis] = {}
        self._failed: dict[str, str] = {}

    async def start(self) -> None:
        if self.config.learn_from_prints:
            self.node.register_event_handler("job_state_changed", self._on_job_state)
        if self.jobs is not None:
            self.node.register_event_handler("queue_changed", self._on_queue_changed)
            for job in await self.jobs.list(RUNNABLE_STATES):
                self.node.spawn(self.analyze_job(job), f"analyse {job.id}")

    # --- the queue's view ---------------------------------------------------------------------
    def analysis_for(self, job: Job) -> Analysis | None:
        """The analysis of a job's file if it is done (never blocks: the planner calls this)."""
        return self._by_sha256.get(job.file_sha256 or "")

    def energy_profile_for(self, job: Job) -> list[tuple[float, float]] | None:
        """``[[t_s, W]]`` per minute for the planner, or None while not analysed (it assumes a typical draw)."""
        analysis = self.analysis_for(job)
        return None if analysis is None else analysis.power_profile

    async def analyze_job(self, job: Job) -> Analysis | None:
        """Analyse a job's file once (cached in the store by sha256) and announce it."""
        if job.file_path is None or job.file_sha256 is None:
            return None
        cached = self._by_sha256.get(job.file_sha256)
        if cached is None and job.file_sha256 not in self._failed:
            try:
                cached = await self.analyze(job.file_path)
            except (GcodeError, OSError) as exc:
                self._failed[job.file_sha256] = str(exc)
                log.warning("analysis of job %s (%s) failed: %s; the planner assumes a typical draw",
                            job.id, job.name, exc)
                return None
            self._by_sha256[job.file_sha256] = cached
            log.info("job %s analysed: %.0f min, %.0f Wh (peak %.0f W), %d layers", job.id,
                     cached.estimated_seconds / 60, cached.energy_wh, cached.peak_w, cached.layers)
        if cached is not None:
            await self.node.send_event("job_analysed", JobAnalysed(
                job_id=job.id, estimated_s=cached.estimated_seconds, energy_wh=cached.energy_wh,
                peak_w=cached.peak_w))
        return cached

    async def _on_queue_changed(self, event: QueueChanged) -> None:
        if event.action == "added" and self.jobs is not None:
            job = await self.jobs.get(event.job_id)
            if job is not None:
                self.node.spawn(self.analyze_job(job), f"analyse {job.id}")

    async def analyze(self, path: str | Path, ambient_c: float | None = None) -> Analysis:
        return await asyncio.to_thread(analyze_cached, self.store, path, self.profile,
                                       self.ambient_c if ambient_c is None else ambient_c)

    async def _on_job_state(self, event: JobStateChanged) -> None:
        if event.to_state != "completed":
            return
        profile = self.profile
        key = profile_key(profile)

        def _record(conn: sqlite3.Connection) -> bool:
            job = conn.execute("SELECT file_sha256 FROM jobs WHERE id = ?", (event.job_id,)).fetchone()
            if job is None or not job[0]:
                return False
            row = conn.execute("SELECT result_json FROM gcode_analysis WHERE file_sha256 = ? AND profile_key = ?"
                               " AND analysis_version = ? ORDER BY created_s DESC LIMIT 1",
                               (job[0], key, ANALYSIS_VERSION)).fetchone()
            if row is None:
                return False
            raw = Analysis.model_validate_json(row[0])
            measured_s = printing_seconds(conn, event.job_id, event.t_s)
            estimated_s = raw.motion_seconds + raw.heatup_seconds
            if measured_s <= 0 or estimated_s <= 0:  # a job with nothing to time (no moves, no heating) teaches nothing
                return False
            with transaction(conn):
                record_print(conn, printer_profile=profile.name, estimated_s=estimated_s,
                             measured_s=measured_s, finished_s=event.t_s, job_id=event.job_id,
                             file_sha256=job[0], estimated_wh=raw.energy_wh)
            return True

        if await self.store.run(_record):
            self.recorded += 1
        else:
            log.info("analysis: job %s finished without a cached analysis of its file: not learned from",
                     event.job_id)

    def status(self) -> dict[str, object]:
        return {"profile": self.profile.name, "ambient_c": self.ambient_c, "prints_recorded": self.recorded,
                "files_analysed": len(self._by_sha256), "files_failed": len(self._failed)}
