"""The Printer component: asyncio face of the printer worker thread.

It starts the worker on the configured port (or the virtual printer's pty),
turns the worker's reports into events in the order they happened (one queue,
one consumer task), keeps the latest temperatures and progress for
``status``, and exposes ``print_job``/``pause``/``resume``/``cancel``.
It never decides *when* to print: that is the job runner's job.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from node.config import PrinterSection
from node.events import JobProgress, PrinterState, Temperatures
from node.node import Component, Node
from node.printer.protocol import TemperatureReport
from node.printer.worker import PrinterWorker, PrintOutcome, PrintRequest
from node.store import Store, transaction

log = logging.getLogger(__name__)


class _LoopSink:
    """Worker-thread callbacks -> an asyncio queue (thread-safe, order kept)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[tuple[str, tuple[Any, ...]]]) -> None:
        self._loop = loop
        self._inbox = inbox

    def _put(self, kind: str, *args: Any) -> None:
        self._loop.call_soon_threadsafe(self._inbox.put_nowait, (kind, args))

    def on_state(self, state: str, detail: str) -> None:
        self._put("state", state, detail)

    def on_temperatures(self, report: TemperatureReport) -> None:
        self._put("temperatures", report)

    def on_progress(self, job_id: str, byte_offset: int, bytes_total: int, lines_sent: int) -> None:
        self._put("progress", job_id, byte_offset, bytes_total, lines_sent)

    def on_checkpoint(self, job_id: str, byte_offset: int, line_number: int) -> None:
        self._put("checkpoint", job_id, byte_offset, line_number)


class Printer(Component):
    name = "printer"

    def __init__(self, node: Node, config: PrinterSection, store: Store) -> None:
        super().__init__(node, config)
        self.config: PrinterSection = config
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
            virtual = self.node.lookup("virtual_printer")
            if virtual is None:
                raise RuntimeError("printer.port is 'virtual' but no virtual printer is running")
            return virtual.port  # type: ignore[attr-defined]
        return self.config.port

    async def start(self) -> None:
        sink = _LoopSink(asyncio.get_running_loop(), self._inbox)
        self.worker = PrinterWorker(self.port, self.config.baud, sink,
                                    connect_timeout_s=self.config.connect_timeout_s,
                                    reply_timeout_s=self.config.reply_timeout_s)
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
    async def print_job(self, job_id: str, path: Path, start_offset: int = 0) -> PrintOutcome:
        assert self.worker is not None
        request = PrintRequest(job_id=job_id, path=path, start_offset=start_offset)
        self._job_started_s = self.node.clock.time()
        self.progress = None
        self.worker.submit(request)
        await asyncio.to_thread(request.done.wait)
        assert request.outcome is not None
        return request.outcome

    def pause(self) -> None:
        if self.worker is not None:
            self.worker.pause()

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
        if kind == "state":
            state, detail = args
            if (state, detail) != (self.state, self.state_detail):
                self.state, self.state_detail = state, detail
                await self.node.send_event("printer_state", PrinterState(state=state, detail=detail))
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
            job_id, byte_offset, line_number = args
            await self.store.run(lambda conn: _save_checkpoint(conn, job_id, clock.time(), byte_offset, line_number))


def _save_checkpoint(conn: Any, job_id: str, t_s: float, byte_offset: int, line_number: int) -> None:
    with transaction(conn):
        conn.execute(
            "INSERT INTO checkpoints(job_id, t_s, byte_offset, line_number, data_json) VALUES(?,?,?,?,'{}') "
            "ON CONFLICT(job_id) DO UPDATE SET t_s=excluded.t_s, byte_offset=excluded.byte_offset, "
            "line_number=excluded.line_number", (job_id, t_s, byte_offset, line_number))
