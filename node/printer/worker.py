"""The printer worker: the one thread that owns the serial port.

It connects (banner or probe, ``M110``, ``M115``, ``M155`` autoreport when
offered, else M105 polling), streams a job file through the compiled
streaming core (ping-pong: one line in flight, resends from a ring of sent
lines), and otherwise polls temperatures.  The asyncio side talks to it only
through :meth:`PrinterWorker.submit` and the pause/resume/cancel flags, and
hears from it only through the ``sink`` callbacks, which it calls from this
thread (the caller makes them thread-safe).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from node.native import streamcore
from node.printer.link import LinkClosed, SerialLink
from node.printer.protocol import Kind, Reply, TemperatureReport, capabilities, classify

log = logging.getLogger(__name__)

RESEND_RING = 256
CHUNK_BYTES = 64 * 1024
#: commands that legitimately keep the printer silent for minutes
LONG_COMMANDS = (b"G28", b"G29", b"M109", b"M190", b"M400", b"G4", b"M600", b"M303")


class WorkerSink(Protocol):
    """What the worker reports; called on the worker thread."""

    def on_state(self, state: str, detail: str) -> None: ...
    def on_temperatures(self, report: TemperatureReport) -> None: ...
    def on_progress(self, job_id: str, byte_offset: int, bytes_total: int, lines_sent: int) -> None: ...
    def on_checkpoint(self, job_id: str, byte_offset: int, line_number: int) -> None: ...


@dataclass
class PrintRequest:
    job_id: str
    path: Path
    start_offset: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    outcome: PrintOutcome | None = None


@dataclass(frozen=True)
class PrintOutcome:
    status: Literal["completed", "cancelled", "failed", "interrupted"]
    reason: str
    byte_offset: int
    lines_sent: int
    resends: int


class PrinterFault(RuntimeError):
    """The printer reported a fatal error or stopped answering."""


class FirmwareReset(RuntimeError):
    """The printer printed ``start``: it rebooted and forgot everything."""


CANCEL_SCRIPT = (b"M104 S0", b"M140 S0", b"M107", b"G91", b"G1 Z2 F600", b"G90", b"M84")


class PrinterWorker(threading.Thread):
    def __init__(self, port: str, baud: int, sink: WorkerSink, *, connect_timeout_s: float = 20.0,
                 reply_timeout_s: float = 30.0, long_timeout_s: float = 900.0,
                 poll_interval_s: float = 2.0, checkpoint_interval_s: float = 5.0) -> None:
        super().__init__(name="printer-worker", daemon=True)
        self.link = SerialLink(port, baud)
        self.sink = sink
        self.connect_timeout_s = connect_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.long_timeout_s = long_timeout_s
        self.poll_interval_s = poll_interval_s
        self.checkpoint_interval_s = checkpoint_interval_s
        self.autoreport = False
        self.connected = threading.Event()
        self._requests: queue.Queue[PrintRequest] = queue.Queue()
        self._stopping = threading.Event()
        self._paused = threading.Event()
        self._cancel = threading.Event()
        self._line_number = 0
        self._sent: OrderedDict[int, bytes] = OrderedDict()
        self._last_poll = 0.0

    # --- called from the asyncio side -------------------------------------------------------
    def submit(self, request: PrintRequest) -> None:
        self._cancel.clear()
        self._paused.clear()
        self._requests.put(request)

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def cancel(self) -> None:
        self._cancel.set()
        self._paused.clear()

    def stop(self) -> None:
        self._stopping.set()
        self._cancel.set()

    # --- thread -----------------------------------------------------------------------------
    def run(self) -> None:
        backoff_s = 0.5
        while not self._stopping.is_set():
            try:
                self._connect()
                backoff_s = 0.5
                self._serve()
            except (LinkClosed, PrinterFault, FirmwareReset) as exc:
                self.connected.clear()
                self.sink.on_state("disconnected" if isinstance(exc, LinkClosed) else "error", str(exc))
                log.warning("printer: %s", exc)
                self.link.close()
                self._stopping.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 10.0)
        self.link.close()

    def _connect(self) -> None:
        self.sink.on_state("connecting", self.link.port)
        self.link.open()
        deadline = time.monotonic() + self.connect_timeout_s
        # Boards that reset on open print a banner; others stay silent: probe with M110.
        self._line_number = 0
        self._sent.clear()
        while time.monotonic() < deadline and not self._stopping.is_set():
            self.link.write(streamcore.frame(0, b"M110 N0"))
            reply = self._wait_ok(timeout_s=2.0, tolerate_start=True)
            if reply is not None:
                break
        else:
            raise LinkClosed(f"no answer from {self.link.port} within {self.connect_timeout_s:.0f} s")
        caps_lines: list[str] = []
        self._send_and_wait(b"M115", collect=caps_lines)
        self.autoreport = capabilities(caps_lines).get("AUTOREPORT_TEMP", False)
        if self.autoreport:
            self._send_and_wait(b"M155 S2")
        self.connected.set()
        self.sink.on_state("ready", self.link.port)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                request = self._requests.get(timeout=0.1)
            except queue.Empty:
                self._idle_poll()
                continue
            try:
                request.outcome = self._stream(request)
            except (FirmwareReset, LinkClosed, PrinterFault) as exc:
                # the job ends with the reason; the connection is rebuilt by run()
                status = "failed" if isinstance(exc, PrinterFault) else "interrupted"
                reason = f"printer link lost: {exc}" if isinstance(exc, LinkClosed) else str(exc)
                request.outcome = PrintOutcome(status, reason, request.start_offset, 0, 0)
                request.done.set()
                raise
            request.done.set()
            self.sink.on_state("ready", self.link.port)

    def _idle_poll(self) -> None:
        now = time.monotonic()
        if not self.autoreport and now - self._last_poll >= self.poll_interval_s:
            self._last_poll = now
            self._send_and_wait(b"M105")
        else:
            line = self.link.readline(0.1)
            if line is not None:
                self._handle_unsolicited(classify(line))

    # --- protocol ---------------------------------------------------------------------------
    def _send(self, command: bytes) -> int:
        self._line_number += 1
        framed = streamcore.frame(self._line_number, command)
        self._sent[self._line_number] = framed
        if len(self._sent) > RESEND_RING:
            self._sent.popitem(last=False)
        self.link.write(framed)
        return self._line_number

    def _send_and_wait(self, command: bytes, collect: list[str] | None = None) -> tuple[Reply, int]:
        self._send(command)
        long = command.split(b" ", 1)[0] in LONG_COMMANDS
        resends = 0
        while True:
            reply = self._wait_ok(self.long_timeout_s if long else self.reply_timeout_s, collect=collect)
            if reply is None:
                raise PrinterFault(f"no reply to {command.decode(errors='replace')!r} within "
                                   f"{self.long_timeout_s if long else self.reply_timeout_s:.0f} s")
            if reply.kind == Kind.OK:
                return reply, resends
            # a resend request: send again from the line asked for (ping-pong: just this one)
            resends += 1
            if resends > 10:
                raise PrinterFault(f"more than 10 consecutive resends of line {self._line_number}")
            self._resend_from(reply.line_number or self._line_number)

    def _resend_from(self, number: int) -> None:
        if number not in self._sent:
            raise PrinterFault(f"printer asked for line {number}, which is no longer held for resend")
        for n in range(number, self._line_number + 1):
            self.link.write(self._sent[n])

    def _wait_ok(self, timeout_s: float, collect: list[str] | None = None,
                 tolerate_start: bool = False) -> Reply | None:
        """Read until ``ok`` or a resend request; None on timeout. ``busy``/``wait``/temps extend it."""
        deadline = time.monotonic() + timeout_s
        pending_resend: Reply | None = None
        while time.monotonic() < deadline:
            line = self.link.readline(min(0.5, max(0.01, deadline - time.monotonic())))
            if line is None:
                continue
            reply = classify(line)
            if reply.kind == Kind.OK:
                if reply.temperatures is not None:
                    self.sink.on_temperatures(reply.temperatures)
                return pending_resend or reply
            if reply.kind == Kind.RESEND:
                pending_resend = reply
                continue
            if reply.kind in (Kind.BUSY, Kind.WAIT, Kind.TEMPERATURE):
                deadline = max(deadline, time.monotonic() + self.reply_timeout_s)
            if reply.kind == Kind.START and tolerate_start:
                continue
            if collect is not None and reply.kind in (Kind.CAPABILITY, Kind.FIRMWARE):
                collect.append(reply.text)
            self._handle_unsolicited(reply)
        return None

    def _handle_unsolicited(self, reply: Reply) -> None:
        if reply.kind == Kind.TEMPERATURE and reply.temperatures is not None:
            self.sink.on_temperatures(reply.temperatures)
        elif reply.kind == Kind.FATAL:
            raise PrinterFault(f"printer reported: {reply.text}")
        elif reply.kind == Kind.START:
            raise FirmwareReset("the printer restarted (firmware printed 'start')")
        elif reply.kind == Kind.ACTION:
            if reply.action == "pause":
                self._paused.set()
            elif reply.action == "resume":
                self._paused.clear()
            elif reply.action == "cancel":
                self._cancel.set()
        elif reply.kind == Kind.ERROR:
            log.warning("printer: %s", reply.text)

    def _hold_while_paused(self, job_id: str, byte_offset: int, bytes_total: int, lines_sent: int) -> None:
        """Send nothing of the job until resumed or cancelled; keep reading temperatures."""
        self.sink.on_progress(job_id, byte_offset, bytes_total, lines_sent)
        self.sink.on_state("paused", job_id)
        while self._paused.is_set() and not self._cancel.is_set() and not self._stopping.is_set():
            self._idle_poll()
        self.sink.on_state("printing", job_id)

    # --- streaming --------------------------------------------------------------------------
    def _stream(self, request: PrintRequest) -> PrintOutcome:
        """Send the file from ``start_offset`` one acknowledged line at a time."""
        self.sink.on_state("printing", request.job_id)
        total = request.path.stat().st_size
        splitter = streamcore.LineSplitter(request.start_offset)
        lines_sent = resends = 0
        acknowledged_offset = request.start_offset
        last_checkpoint = last_progress = time.monotonic()
        with request.path.open("rb") as handle:
            handle.seek(request.start_offset)
            finished = False
            while not finished:
                chunk = handle.read(CHUNK_BYTES)
                batch = splitter.feed(chunk) if chunk else splitter.finish()
                finished = not chunk
                for offset, command in batch:
                    if self._paused.is_set():
                        self._hold_while_paused(request.job_id, offset, total, lines_sent)
                    if self._cancel.is_set() or self._stopping.is_set():
                        for end_command in CANCEL_SCRIPT:
                            self._send_and_wait(end_command)
                        why = "cancelled" if not self._stopping.is_set() else "the node is stopping"
                        return PrintOutcome("cancelled" if not self._stopping.is_set() else "interrupted",
                                            why, acknowledged_offset, lines_sent, resends)
                    if command is None:
                        return PrintOutcome("failed", f"line at byte {offset} is longer than 4096 bytes",
                                            acknowledged_offset, lines_sent, resends)
                    _, line_resends = self._send_and_wait(command)
                    resends += line_resends
                    lines_sent += 1
                    acknowledged_offset = offset  # start of the last acknowledged line
                    now = time.monotonic()
                    if now - last_progress >= 0.5:
                        last_progress = now
                        self.sink.on_progress(request.job_id, offset, total, lines_sent)
                    if now - last_checkpoint >= self.checkpoint_interval_s:
                        last_checkpoint = now
                        self.sink.on_checkpoint(request.job_id, offset, self._line_number)
        self._send_and_wait(b"M400")  # 'ok' means planned; wait until executed
        self.sink.on_progress(request.job_id, total, total, lines_sent)
        return PrintOutcome("completed", "all lines executed", total, lines_sent, resends)
