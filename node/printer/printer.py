"""The Printer component: asyncio face of the printer worker thread.

It starts the worker on the configured port (or the virtual printer's pty),
turns the worker's reports into events in the order they happened (one queue,
one consumer task), keeps the latest temperatures and progress for
``status``, and exposes ``print_job``/``pause``/``resume``/``cancel``.
It never decides *when* to print: that is the job runner's job.
"""
from __future__ import annotations

import asyncio
import json
import logging
import shlex
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from node.events import JobProgress, PrinterEmergency, PrinterState, Temperatures
from node.node import Component, Node
from node.printer.config import PrinterSection, SafetySection
from node.printer.pausing import HeaterPlan
from node.printer.profile import load_profile
from node.printer.protocol import TemperatureReport
from node.printer.virtualproc import VirtualPrinterProcess
from node.printer.worker import Checkpoint, PrinterWorker, PrintOutcome, PrintRequest, StreamSettings
from node.store import Store, transaction


def stream_settings(config: PrinterSection, ping_pong: bool = False) -> StreamSettings:
    """The worker's settings from ``[printer]``."""
    return StreamSettings(
        max_commands=config.max_commands, rx_buffer_bytes=config.rx_buffer_bytes,
        ping_pong=ping_pong or config.ping_pong, connect_timeout_s=config.connect_timeout_s,
        reply_timeout_s=config.reply_timeout_s, long_timeout_s=config.long_timeout_s, tickle_s=config.tickle_s,
        max_probes=config.max_probes, max_consecutive_resends=config.max_consecutive_resends,
        poll_interval_s=config.poll_interval_s, checkpoint_interval_s=config.checkpoint_interval_s,
        resend_has_ok=config.resend_has_ok, boot_wait_s=config.boot_wait_s,
        coalesce_s=config.coalesce_s)

log = logging.getLogger(__name__)


class _LoopSink:
    """Worker-thread callbacks -> an asyncio queue (thread-safe, order kept)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[tuple[str, tuple[Any, ...]]]) -> None:
        self._loop = loop
        self._inbox = inbox

    def _put(self, kind: str, *args: Any) -> None:
        self._loop.call_soon_threadsafe(self._inbox.put_nowait, (kind, args))

    def on_state(self, state: str, detail: str, asked_by: str = "node") -> None:
        self._put("state", state, detail, asked_by)

    def on_temperatures(self, report: TemperatureReport) -> None:
        self._put("temperatures", report)

    def on_progress(self, job_id: str, byte_offset: int, bytes_total: int, lines_sent: int) -> None:
        self._put("progress", job_id, byte_offset, bytes_total, lines_sent)

    def on_checkpoint(self, job_id: str, checkpoint: Checkpoint) -> None:
        self._put("checkpoint", job_id, checkpoint)

    def on_emergency(self, reason: str) -> None:
        self._put("emergency", reason)


class Printer(Component):
    name = "printer"
    section = "printer"

    def __init__(self, node: Node, config: PrinterSection, store: Store,
                 safety: SafetySection | None = None, virtual: VirtualPrinterProcess | None = None) -> None:
        super().__init__(node, config)
        self.config: PrinterSection = config
        self.safety = safety or SafetySection()
        self.virtual = virtual
        self.store = store
        self.worker: PrinterWorker | None = None
        self.state = "disconnected"
        self.state_detail = ""
        self.temperatures: Temperatures | None = None
        self.progress: JobProgress | None = None
        self._inbox: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue()
        self._job_started_s: float = 0.0

    @property
    def port(self) -> str:
        if self.config.port == "virtual":
            if self.virtual is None:
                raise RuntimeError("printer.port is 'virtual' but no virtual printer is running")
            return self.virtual.port
        return self.config.port

    async def start(self) -> None:
        sink = _LoopSink(asyncio.get_running_loop(), self._inbox)
        self.worker = PrinterWorker(self.port, self.config.baud, sink, settings=stream_settings(self.config),
                                    safety=self.safety, clock=self.node.clock,
                                    profile=load_profile(self.config.profile),  # the heating bound's model
                                    action_pause=HeaterPlan.from_policy(self.config.pause.printer),
                                    rewind_moves=self.config.resume_rewind_moves)
        self.node.spawn(self._consume(), "printer-events")
        self.worker.start()

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            await asyncio.to_thread(self.worker.join, 10)

    @property
    def ready(self) -> bool:
        """Connected and not busy with a job."""
        return self.state == "ready"

    async def wait_ready(self, timeout_s: float) -> bool:
        assert self.worker is not None
        return await asyncio.to_thread(self.worker.connected.wait, timeout_s)

    # --- commands from the runner and the control API ---------------------------------------
    async def print_job(self, job_id: str, path: Path, start_offset: int = 0,
                        prologue: tuple[bytes, ...] = ()) -> PrintOutcome:
        assert self.worker is not None
        request = PrintRequest(job_id=job_id, path=path, start_offset=start_offset, prologue=prologue)
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def wake(_request: PrintRequest) -> None:  # on the worker thread
            try:
                loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))
            except RuntimeError:  # the loop has closed: nobody waits any more
                pass

        request.on_done.append(wake)
        self._job_started_s = self.node.clock.time()
        self.progress = None
        # the worker finishes every request it takes or still holds when it stops (PrintRequest.finish):
        # awaited as a future, not in an executor thread, so a stopping daemon never waits on this
        self.worker.submit(request)
        await finished
        assert request.outcome is not None
        # the worker's last reports (the final checkpoint above all) are queued before ``done``:
        # let them be handled before the caller moves the job on (a resume reads that checkpoint)
        handled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(("barrier", (handled,)))
        await handled
        return request.outcome

    def pause(self, heaters: HeaterPlan | None = None) -> None:
        if self.worker is not None:
            self.worker.pause(heaters)

    def suspend(self) -> None:
        if self.worker is not None:
            self.worker.suspend()

    def resume(self) -> None:
        if self.worker is not None:
            self.worker.resume()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "detail": self.state_detail,
            "temperatures": None if self.temperatures is None else self.temperatures.model_dump(),
            "progress": None if self.progress is None else self.progress.model_dump(),
            "link": None if self.worker is None else self.worker.link_report(),
        }

    # --- worker reports, in order -----------------------------------------------------------
    async def _consume(self) -> None:
        while True:
            kind, args = await self._inbox.get()
            try:
                await self._handle(kind, args)
            except Exception:
                log.exception("printer: handling %s report failed", kind)

    async def _handle(self, kind: str, args: tuple[Any, ...]) -> None:
        clock = self.node.clock
        if kind == "barrier":
            args[0].set_result(None)
        elif kind == "state":
            state, detail, asked_by = args
            if (state, detail) != (self.state, self.state_detail):
                self.state, self.state_detail = state, detail
                await self.node.send_event("printer_state", PrinterState(state=state, detail=detail,
                                                                         asked_by=asked_by))
        elif kind == "temperatures":
            report: TemperatureReport = args[0]
            self.temperatures = Temperatures(
                t_s=clock.time(), hotend_c=report.hotend_c, hotend_target_c=report.hotend_target_c,
                bed_c=report.bed_c, bed_target_c=report.bed_target_c,
                hotend_pwm=report.hotend_pwm, bed_pwm=report.bed_pwm)
            await self.node.send_event("temperatures", self.temperatures)
        elif kind == "progress":
            job_id, byte_offset, bytes_total, lines_sent = args
            self.progress = JobProgress(
                job_id=job_id, bytes_done=byte_offset, bytes_total=bytes_total, lines_sent=lines_sent,
                percent=100.0 * byte_offset / bytes_total if bytes_total else 100.0,
                elapsed_s=clock.time() - self._job_started_s)
            await self.node.send_event("job_progress", self.progress)
        elif kind == "checkpoint":
            job_id, checkpoint = args
            await self._store_checkpoint(job_id, checkpoint)
        elif kind == "emergency":
            reason = args[0]
            await self.node.send_event("printer_emergency", PrinterEmergency(t_s=clock.time(), reason=reason))
            if self.safety.relay_off_command:
                await asyncio.to_thread(_run_relay_off, self.safety.relay_off_command)

    async def _store_checkpoint(self, job_id: str, checkpoint: Checkpoint) -> None:
        t_s = self.node.clock.time()
        await self.store.run(lambda conn: save_checkpoint(conn, job_id, t_s, checkpoint))


def _run_relay_off(command: str) -> None:
    """The relay hook: a configured command that cuts the printer's supply (GPIO lands with issue hw)."""
    try:
        subprocess.run(shlex.split(command), timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.error("relay off command %r failed: %s", command, exc)


def save_checkpoint(conn: Any, job_id: str, t_s: float, checkpoint: Checkpoint) -> None:
    """One row per job, replaced each time (bounded writes: see docs/resume.md), and never moved
    backwards: a resumed print re-sends the rewound lines behind its checkpoint first, and a kill
    then must not rewind again from the earlier point (each resume keeps the documented bound)."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO checkpoints(job_id, t_s, byte_offset, line_number, data_json) VALUES(?,?,?,?,?) "
            "ON CONFLICT(job_id) DO UPDATE SET t_s=excluded.t_s, byte_offset=excluded.byte_offset, "
            "line_number=excluded.line_number, data_json=excluded.data_json "
            "WHERE excluded.byte_offset >= checkpoints.byte_offset",
            (job_id, t_s, checkpoint.byte_offset, checkpoint.line_number, json.dumps(asdict(checkpoint))))


def clear_checkpoint(conn: Any, job_id: str) -> None:
    """A job printed from its first line again (a retry) starts with no checkpoint."""
    with transaction(conn):
        conn.execute("DELETE FROM checkpoints WHERE job_id = ?", (job_id,))


def load_checkpoint(conn: Any, job_id: str) -> Checkpoint | None:
    row = conn.execute("SELECT data_json FROM checkpoints WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    try:
        return Checkpoint(**json.loads(row[0]))
    except (TypeError, ValueError):
        return None
