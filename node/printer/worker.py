"""The printer worker: the one thread that owns the serial port.

It connects (boot banner or probe, ``M110``, ``M115``, ``M155`` autoreport when
offered, else M105 polling) and streams a job through the compiled
:class:`~node._streamcore.Sender`: Python reads the file in chunks and hands
them to the core, which frames lines, keeps the send window full (bounded by
the firmware's command queue and receive buffer, grown by ADVANCED_OK's ``B``,
or one line with ``ping_pong``), handles resends from its ring and parses the
replies.  The write/wait/read cycle itself runs natively
(:class:`~node._streamcore.Pump`, GIL released in the system calls); Python
sees only the replies worth attention (temperatures, errors, resets, actions),
the counters, and a turn at least every ``SLICE_S`` while replies flow.

Liveness: progress is an acknowledged line, never a reply alone (temperature
reports, ``busy:`` and ``wait`` keep flowing from a wedged firmware).  ``tickle_s``
without progress, lines in flight, sends the oldest unacknowledged line again
(a probe: the firmware's answer says exactly where it stands, which also
recovers a lost ``ok``).  How long progress may take depends on the phase the
lines in flight put the printer in (node/printer/liveness.py: heating by the
profile's thermal model, long commands, streaming; waiting for the user has no
bound and is reported as the state ``waiting_user``).  Past the bound, or after
``max_probes`` unanswered probes, the worker fails safe: ``M112`` through the
emergency parser when the firmware has one, otherwise the port is closed with a
DTR pulse (boards reset, heaters off); the job fails with the reason.  A cancel
takes effect within ``CANCEL_WITHIN_S`` whatever the link does.

The asyncio side talks to it only through :meth:`PrinterWorker.submit` and the
pause/resume/cancel calls, and hears from it through the ``sink`` callbacks,
called on this thread (the caller makes them thread-safe).
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

from node.clock import Clock
from node.events import USER_ANSWERED
from node.native import streamcore
from node.printer.config import SafetySection
from node.printer.layers import LayerMarks
from node.printer.link import LinkClosed, SerialLink
from node.printer.liveness import HeaterPeaks, Phase, longest_move_s, phase_of
from node.printer.pausing import RETRACT_MM, HeaterPlan, Targets, park_script, reheat_script, suspend_script
from node.printer.profile import PrinterProfile
from node.printer.protocol import TemperatureReport
from node.printer.resume import ModalState, state_at
from node.printer.safety import ThermalViolation, ThermalWatchdog

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
#: a layer change checkpoints at once, but at most this often (real seconds): tiny layers must not
#: turn the checkpoint into a write per layer (docs/resume.md: the bound on writes a minute)
LAYER_CHECKPOINT_MIN_S = 2.0
REFILL_BELOW_LINES = 1024
SLICE_S = 0.05  # the native pump hands back at least this often while replies flow (pause, cancel, progress)
PUMP_IDLE, PUMP_SILENT = streamcore.PUMP_IDLE, streamcore.PUMP_SILENT
PWM_MAX = 127.0
EV = streamcore
#: a cancel ends the job within this many seconds, whatever the link does: the lines in flight get
#: CANCEL_DRAIN_S to finish, the cancel script the rest; past that the worker fails safe
CANCEL_WITHIN_S = 4.5
CANCEL_DRAIN_S = 2.0
#: while streaming, the first probe comes after this many typical acknowledgement gaps (a lost ok at
#: a fast firmware costs a fraction of a second, not tickle_s), never sooner than MIN_TICKLE_S
TICKLE_GAPS = 20
MIN_TICKLE_S = 0.25
#: lines before the planner's that place the axes and the feed rate for the motion bound
MOTION_LOOKBACK_LINES = 32
#: temperature reports while idle with every heater off and cold (M155 S5, or M105 polls this far apart):
#: the host watchdog's silence check only runs while a heater is on, and what an idle printer can do on
#: its own — a heater driven with no target (a shorted MOSFET) — takes minutes to pass COLD_C, after
#: which reports come at the full rate again, well before any limit (max_hotend_c + overshoot_c)
IDLE_REPORT_S = 5
#: a heater at or above this is not "cold": reports at the full rate until it has cooled (after a print)
COLD_C = 50.0
#: the idle worker sleeps until the port has bytes, a request or a call arrives, or its next deadline
#: (an M105 poll, the watchdog's silence bound): at most this long (nothing else is due in between)
IDLE_MAX_WAIT_S = 5.0


class WorkerSink(Protocol):
    """What the worker reports; called on the worker thread."""

    def on_state(self, state: str, detail: str, asked_by: str = "node") -> None: ...
    def on_temperatures(self, report: TemperatureReport) -> None: ...
    def on_progress(self, job_id: str, byte_offset: int, bytes_total: int, lines_sent: int) -> None: ...
    def on_checkpoint(self, job_id: str, checkpoint: Checkpoint) -> None: ...
    def on_emergency(self, reason: str) -> None: ...


@dataclass(frozen=True)
class StreamSettings:
    """How the worker drives the link (from ``[printer]``; see config/node.example.toml)."""

    max_commands: int = 4
    rx_buffer_bytes: int = 128
    ping_pong: bool = False
    connect_timeout_s: float = 20.0
    reply_timeout_s: float = 30.0
    long_timeout_s: float = 900.0
    tickle_s: float = 3.0
    max_probes: int = 5
    max_consecutive_resends: int = 25
    poll_interval_s: float = 2.0
    autoreport_interval_s: int = 2
    boot_wait_s: float = 2.0
    coalesce_s: float = 0.0
    checkpoint_interval_s: float = 5.0
    resend_has_ok: bool = True


@dataclass(frozen=True)
class Checkpoint:
    """Where a job stands: the last acknowledged line and what resume needs beside it.

    ``resume_offset`` is already rewound past the moves that may have been planned
    but not executed (see docs/resume.md).
    """

    byte_offset: int          # start of the last acknowledged job line
    resume_offset: int        # where a resume after a reset restarts
    line_number: int          # protocol line number of the last acknowledged line
    lines_acked: int
    hotend_target_c: float
    bed_target_c: float
    t_real_s: float
    #: where the nozzle physically is when it is not at the file's Z (parked above a suspended
    #: print); the resume tells the printer this Z, not the file's (docs/resume.md)
    head_z_mm: float | None = None


@dataclass
class PrintRequest:
    job_id: str
    path: Path
    start_offset: int = 0
    prologue: tuple[bytes, ...] = ()  # commands sent before the file (the resume script)
    done: threading.Event = field(default_factory=threading.Event)
    outcome: PrintOutcome | None = None
    #: called once, on the worker thread, when the outcome is set (the Printer component wakes its
    #: coroutine with it: no executor thread blocks on ``done``, so nothing keeps a stopping loop alive)
    on_done: list[Callable[[PrintRequest], None]] = field(default_factory=list)

    def finish(self, outcome: PrintOutcome) -> None:
        """Record how the print ended and wake whoever waits (once; later calls are ignored)."""
        if self.done.is_set():
            return
        self.outcome = outcome
        self.done.set()
        for callback in self.on_done:
            try:
                callback(self)
            except Exception:  # a waiter gone (its loop closed) must not take the worker down
                log.exception("print request %s: completion callback failed", self.job_id)


@dataclass(frozen=True)
class PrintOutcome:
    status: Literal["completed", "cancelled", "failed", "interrupted", "suspended"]
    reason: str
    byte_offset: int
    lines_sent: int
    resends: int
    seconds: float = 0.0
    checkpoint: Checkpoint | None = None


class PrinterFault(RuntimeError):
    """The printer reported a fatal error or stopped answering."""


class FirmwareReset(RuntimeError):
    """The printer printed ``start``: it rebooted and forgot everything."""


class JobRefused(RuntimeError):
    """The job itself cannot be sent (an overlong line)."""


class CancelRequested(RuntimeError):
    """A cancel arrived while the worker waited for one command (a prologue, a pause script)."""


CANCEL_SCRIPT = (b"M104 S0", b"M140 S0", b"M107", b"G91", b"G1 Z2 F600", b"G90", b"M84")


class PrinterWorker(threading.Thread):
    def __init__(self, port: str, baud: int, sink: WorkerSink, *, settings: StreamSettings | None = None,
                 safety: SafetySection | None = None, clock: Clock | None = None,
                 action_pause: HeaterPlan | None = None, rewind_moves: int = 20,
                 profile: PrinterProfile | None = None) -> None:
        super().__init__(name="printer-worker", daemon=True)
        self.settings = settings or StreamSettings()
        self.link = SerialLink(port, baud)
        self.sink = sink
        self.clock = clock or Clock(1.0)
        self.safety = safety or SafetySection()
        self.watchdog = ThermalWatchdog(self.safety)
        self.rewind_moves = rewind_moves
        self.profile = profile  # its thermal model bounds the heating phase (liveness.py)
        self.autoreport = False
        self.emergency_parser = False
        self.advanced_ok = False
        self.firmware = ""
        self.connected = threading.Event()
        self.engine = self._new_engine()
        self._requests: queue.Queue[PrintRequest] = queue.Queue()
        self._stopping = threading.Event()
        self._paused = threading.Event()
        self._answer_user = threading.Event()  # resume pressed while the firmware waits for its user
        self._suspend = threading.Event()
        self._cancel = threading.Event()
        self._pause_plan = HeaterPlan()
        self._pause_targets = Targets()
        self._parked_z: float | None = None
        #: the heaters during a pause the firmware asked for (//action:pause)
        self.action_pause = action_pause or HeaterPlan()
        #: who asked for the current pause and for its end ("node" or "printer"), said with the park's
        #: "paused" and the unpark's "printing": the runner moves the job only for the firmware's
        self._pause_asked_by = "node"
        self._resume_asked_by = "node"
        self._collect: list[str] | None = None
        self._last_poll = 0.0
        self._last_progress = time.monotonic()  # the last time a line was acknowledged
        self._peaks = HeaterPeaks()             # each heater's highest reading since then (liveness.py)
        self._last_rx = time.monotonic()        # the last time any byte arrived
        self._first_probe_t = 0.0
        self._ack_gap_s = MIN_TICKLE_S / TICKLE_GAPS  # typical time between acknowledged lines (learnt)
        self._acked_seen = 0
        self._probes = 0
        self._user_wait = False  # the firmware said it waits for the user (M600, 'paused for user')
        self._user_wait_at: int | None = None  # the sink was told "waiting_user" at this acked count
        self._phase: Phase | None = None
        self._queued_move_at: tuple[int, tuple[float, str]] = (-1, (0.0, ""))
        self._resend_streak = 0
        self._last_resend: int | None = None
        self._acked_at_resend = 0
        self._last_temps: TemperatureReport | None = None
        self._hold_until = 0.0
        self._probe_after_hold = False
        # after a resend request, lines sent before it are still arriving and each one makes the
        # firmware flush its receive buffer: wait until they have crossed the link (two buffers'
        # worth of wire time, at least 20 ms) before resending, or the resent lines are flushed too
        self._settle_s = max(0.02, 2 * self.settings.rx_buffer_bytes * 10 / max(baud, 1200))
        self.stop_after_one_job = False
        self.pump: streamcore.Pump | None = None  # the last job's (its counters: reads, writes, naps)
        #: the rate asked of M155 now (s; 0 before the handshake): IDLE_REPORT_S while idle and cold
        self.report_interval_s = 0
        #: wakes the idle thread (a request, stop, cancel, resume): a pipe, open while the thread runs
        self._wake_lock = threading.Lock()
        self._wake_fds: tuple[int, int] | None = None
        self._ended = False  # the thread has ended: a request submitted now fails at once
        self.idle_wakeups = 0  # idle turns taken (a statistic: what an idle printer costs)

    def _new_engine(self) -> streamcore.Sender:
        s = self.settings
        return streamcore.Sender(1 if s.ping_pong else s.max_commands, s.rx_buffer_bytes, 4096,
                                 s.resend_has_ok)

    # --- called from the asyncio side -------------------------------------------------------
    def submit(self, request: PrintRequest) -> None:
        self._cancel.clear()
        self._paused.clear()
        self._suspend.clear()
        with self._wake_lock:
            ended = self._ended
            if not ended:
                self._requests.put(request)
        if ended:
            request.finish(PrintOutcome("interrupted", "the printer worker has stopped", request.start_offset, 0, 0))
            return
        self._wake()

    def _wake(self) -> None:
        """Wake the idle thread now (a no-op when it is not running or is already awake)."""
        with self._wake_lock:
            if self._wake_fds is not None:
                try:
                    os.write(self._wake_fds[1], b"\0")
                except OSError:  # full: it is awake already
                    pass

    def pause(self, heaters: HeaterPlan | None = None, asked_by: str = "node") -> None:
        """Pause at the next safe point (the lines in flight done), heaters per ``heaters``."""
        self._pause_plan = heaters or HeaterPlan()
        self._pause_asked_by = asked_by
        self._paused.set()

    def suspend(self) -> None:
        """End a pause with heaters, fan and steppers off: the print returns as ``suspended``
        with an exact checkpoint, to be resumed through the power-loss path."""
        self._pause_asked_by = "node"
        self._suspend.set()
        self._paused.set()

    def resume(self) -> None:
        self._resume_asked_by = "node"
        self._paused.clear()
        if self._user_wait or self._user_wait_at is not None:
            self._answer_user.set()  # the worker thread writes: one writer on the port
        self._wake()

    def _answer_user_wait(self) -> None:
        """A person pressed resume on the page while the firmware waits for its own button (M0/M1/M600):
        ``M108`` ends that wait through the emergency parser; without one the firmware reads nothing
        until its button is pressed, so the node can only say so."""
        self._answer_user.clear()
        if self.emergency_parser:
            log.info("resume: the printer waits for the user; sending M108 (emergency parser)")
            try:
                self.link.write_all(b"M108\n")
            except OSError as exc:
                log.warning("resume: M108 not sent: %s", exc)
        else:
            log.warning("resume: the printer waits for its own button (M0/M1/M600) and has no emergency parser "
                        "to take M108: press the button on the printer")

    def cancel(self) -> None:
        self._cancel.set()
        self._paused.clear()
        self._wake()

    def stop(self) -> None:
        self._stopping.set()
        self._cancel.set()
        self._wake()

    def link_report(self) -> dict[str, object]:
        """Counters for ``printnode status`` (read from another thread: plain ints, no locking needed)."""
        engine = self.engine
        return {"firmware": self.firmware, "advanced_ok": self.advanced_ok or engine.advanced_ok_seen,
                "autoreport": self.autoreport, "lines_acked": engine.lines_acked, "resends": engine.resends,
                "garbled_oks": engine.garbled_oks, "inflight": engine.inflight,
                "planner_free": engine.planner_free, "queue_free": engine.queue_free,
                "window": engine.window, "firmware_bufsize": engine.firmware_bufsize,
                "markers_sent": engine.markers_sent, "lost_oks_settled": engine.marker_settled}

    # --- thread -----------------------------------------------------------------------------
    def run(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        with self._wake_lock:
            self._wake_fds = (read_fd, write_fd)
        try:
            self._run()
        finally:
            with self._wake_lock:
                self._wake_fds = None
                self._ended = True
            os.close(read_fd)
            os.close(write_fd)
            self._fail_pending("the printer worker stopped" if self._stopping.is_set()
                               else "the printer worker ended unexpectedly (see the log)")

    def _fail_pending(self, reason: str) -> None:
        """Every request still queued ends as ``interrupted`` with ``reason``: no caller waits forever."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            log.warning("printer: job %s not printed: %s", request.job_id, reason)
            request.finish(PrintOutcome("interrupted", reason, request.start_offset, 0, 0))

    def _run(self) -> None:
        backoff_s = 0.5
        while not self._stopping.is_set():
            try:
                if not self.link.is_open:
                    self._open()
                self._connect()
                backoff_s = 0.5
                self._serve()
            except FirmwareReset as exc:
                # keep the port open: closing and reopening it would reset a DTR board once more
                self.connected.clear()
                self.sink.on_state("error", str(exc))
                log.warning("printer: %s; handshaking again", exc)
                if self.stop_after_one_job:
                    return
            except (LinkClosed, PrinterFault) as exc:
                self.connected.clear()
                self.sink.on_state("disconnected" if isinstance(exc, LinkClosed) else "error", str(exc))
                log.warning("printer: %s", exc)
                self.link.close()
                if self.stop_after_one_job:
                    return
                self._stopping.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 10.0)
        self.link.close()

    def _open(self) -> None:
        """Open the port and let a board that resets on open (DTR) boot: wait for its banner.

        Stale bytes from before the open are dropped; a board that does not reset stays silent
        and costs ``boot_wait_s`` once per open.
        """
        self.sink.on_state("connecting", self.link.configured_port)
        self.link.open()
        self.link.drop_input()
        deadline = time.monotonic() + self.settings.boot_wait_s
        seen = b""
        while time.monotonic() < deadline and not self._stopping.is_set():
            seen = (seen + self.link.read_chunk(max(0.01, deadline - time.monotonic())))[-4096:]
            if b"start\n" in seen or b"start\r\n" in seen:
                self.link.read_chunk(0.05)  # the rest of the banner
                break

    def _connect(self) -> None:
        """Handshake on the open port: probe with M110, M115 capabilities, M155 autoreport."""
        deadline = time.monotonic() + self.settings.connect_timeout_s
        for attempt in range(4):
            try:
                self._handshake(deadline)
                break
            except FirmwareReset:
                if attempt == 3:
                    raise
                log.info("printer rebooted during the handshake (reset on open): starting again")
        self.connected.set()
        self.sink.on_state("ready", self.link.port)

    def _handshake(self, deadline: float) -> None:
        answered = False
        while time.monotonic() < deadline and not self._stopping.is_set():
            self.link.write_all(streamcore.frame(0, b"M110 N0"))
            if self._wait_plain_ok(min(2.0, max(0.1, deadline - time.monotonic()))):
                answered = True
                break
        if not answered:
            raise LinkClosed(f"no answer from {self.link.port} within {self.settings.connect_timeout_s:.0f} s")
        self.engine = self._new_engine()
        self.engine.reset_numbering(0)
        self._acked_seen = 0
        self._last_progress = time.monotonic()
        self._peaks.clear()
        caps: list[str] = []
        self._collect = caps
        try:
            self.command(b"M115")
        finally:
            self._collect = None
        capabilities = {}
        for line in caps:
            parts = line.split(":")
            if len(parts) >= 3 and parts[0] == "Cap":
                capabilities[parts[1].strip().upper()] = parts[2].strip() == "1"
            elif line.startswith("FIRMWARE_NAME:"):
                self.firmware = line[len("FIRMWARE_NAME:"):].split(" SOURCE_CODE_URL")[0]
        # one temperature query: shows whether the firmware answers M105 with "ok T:..." on one line,
        # an ok that names its line (the streaming core then settles oks a refusal left uncertain)
        self.command(b"M105")
        self.autoreport = capabilities.get("AUTOREPORT_TEMP", False)
        self.advanced_ok = capabilities.get("ADVANCED_OK", False)
        self.emergency_parser = capabilities.get("EMERGENCY_PARSER", False)
        self.report_interval_s = 0
        if self.autoreport:
            self.command(b"M155 S%d" % self.settings.autoreport_interval_s)
            self.report_interval_s = self.settings.autoreport_interval_s

    def _wait_plain_ok(self, timeout_s: float) -> bool:
        """During the connect probe: an ``ok`` arrived (banner lines and boot chatter are skipped)."""
        deadline = time.monotonic() + timeout_s
        pending = b""
        while time.monotonic() < deadline:
            pending += self.link.read_chunk(max(0.01, deadline - time.monotonic()))
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.strip(b"\r \0")
                if text.startswith(b"ok"):
                    return True
                if text.startswith(b"Error:") and b"halted" in text.lower():
                    raise PrinterFault(f"printer reported: {text.decode(errors='replace')} (needs a reset)")
        return False

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                self._idle()
                continue
            started = time.monotonic()
            try:
                outcome = self._stream(request)
            except FirmwareReset as exc:
                request.finish(self._outcome(request, "interrupted", str(exc), started))
                raise
            except LinkClosed as exc:
                request.finish(self._outcome(request, "interrupted", f"printer link lost: {exc}", started))
                raise
            except PrinterFault as exc:
                request.finish(self._outcome(request, "failed", str(exc), started))
                raise
            except BaseException as exc:  # a bug must not leave the caller waiting for ever
                request.finish(PrintOutcome("failed", f"printer worker error: {type(exc).__name__}: {exc}",
                                            request.start_offset, 0, 0, time.monotonic() - started))
                raise
            request.finish(outcome)
            self.sink.on_state("ready", self.link.port)
            if self.stop_after_one_job:
                self._stopping.set()

    def _outcome(self, request: PrintRequest, status: Literal["completed", "cancelled", "failed", "interrupted"],
                 reason: str, started: float) -> PrintOutcome:
        checkpoint = self.checkpoint(request)
        if status == "interrupted" and checkpoint is not None:
            self.sink.on_checkpoint(request.job_id, checkpoint)  # fresher than the last periodic one
        return PrintOutcome(status, reason, checkpoint.byte_offset if checkpoint else request.start_offset,
                            self.engine.job_lines_acked, self.engine.resends, time.monotonic() - started, checkpoint)

    def _idle(self, max_wait_s: float = IDLE_MAX_WAIT_S, job_held: bool = False) -> None:
        """One idle turn: a temperature poll or report-rate change if due, else sleep until the port has
        bytes, a call wakes the thread (a request, stop, cancel, resume) or the next deadline, then the
        checks.  ``job_held``: a paused job holds the printer (reports stay at the full rate)."""
        now = time.monotonic()
        if not self.autoreport and now - self._last_poll >= self._poll_interval_s(job_held):
            self._last_poll = now
            self._idle_command(b"M105")
            return
        if self.autoreport and not job_held:
            wanted = self._wanted_report_s(idle=True)
            if wanted != self.report_interval_s:
                self._idle_command(b"M155 S%d" % wanted)
                self.report_interval_s = wanted
                return
        self.idle_wakeups += 1
        self._wait_port_or_wake(min(max_wait_s, self._idle_due_s(now, job_held)))
        self._check_timeouts(job_active=False)

    def _idle_command(self, command: bytes) -> None:
        """A host command while no job streams: a cancel left over from the last job has nothing to stop."""
        try:
            self.command(command)
        except CancelRequested:
            self._cancel.clear()

    def _wanted_report_s(self, idle: bool) -> int:
        """M155's interval: the configured one while a job runs or a heater is on or warm, IDLE_REPORT_S
        while idle with every heater off and below COLD_C (see IDLE_REPORT_S for why that is safe)."""
        fast = self.settings.autoreport_interval_s
        temps = self._last_temps
        if not idle or temps is None or temps.hotend_target_c > 0 or temps.bed_target_c > 0 \
                or temps.hotend_c >= COLD_C or temps.bed_c >= COLD_C:
            return fast
        return max(fast, IDLE_REPORT_S)

    def _poll_interval_s(self, job_held: bool) -> float:
        """M105 polls (firmware without autoreport) follow the same rule as M155's interval."""
        if job_held or self._wanted_report_s(idle=True) == self.settings.autoreport_interval_s:
            return self.settings.poll_interval_s
        return max(self.settings.poll_interval_s, IDLE_REPORT_S)

    def _idle_due_s(self, now: float, job_held: bool) -> float:
        """Seconds until the idle thread must look again although nothing woke it."""
        if self.engine.inflight:  # a host command's line unanswered: the probe cadence
            return 0.1
        due = IDLE_MAX_WAIT_S
        if not self.autoreport:
            due = min(due, self._last_poll + self._poll_interval_s(job_held) - now)
        last_report = self.watchdog.last_report_real_s
        if self.watchdog.heater_on() and last_report is not None:  # the silence bound of check_silence
            due = min(due, last_report + self.safety.report_timeout_s - now + 0.01)
        return max(0.0, due)

    def _wait_port_or_wake(self, timeout_s: float) -> None:
        """Sleep until the port has bytes (taken), a call wakes the thread, or ``timeout_s``."""
        fds = self._wake_fds
        wake_fd = fds[0] if fds is not None else None
        port_ready = self.link.wait_readable(timeout_s, wake_fd)
        if wake_fd is not None:
            try:
                while os.read(wake_fd, 64):
                    pass
            except BlockingIOError:
                pass
        if port_ready:
            self._pump(0)

    # --- the engine loop --------------------------------------------------------------------
    def command(self, command: bytes, deadline: float | None = None) -> None:
        """Send one host command and wait until the printer acknowledged it.

        A cancel interrupts the wait (CancelRequested), except for the cancel script itself, which
        has ``deadline`` instead: past it the link is wedged (PrinterFault)."""
        self.engine.inject(command)
        self._flush_out()
        target = self.engine.last_sent + self.engine.injected_pending  # injected go before job lines
        while self.engine.last_acked < target:
            self._flush_out()
            self._pump(0.05)
            self._check_timeouts(job_active=False)
            if deadline is not None and time.monotonic() > deadline:
                raise PrinterFault(f"{command.decode(errors='replace')} not acknowledged in time")
            if command not in CANCEL_SCRIPT and deadline is None:
                if self._stopping.is_set():
                    raise LinkClosed("the node is stopping")
                if self._cancel.is_set():
                    raise CancelRequested()

    def _flush_out(self) -> None:
        if self._hold_until:
            if time.monotonic() < self._hold_until:
                return
            self._end_hold()
        out = self.engine.fill()
        if out:
            self.link.write_all(out)

    def _pump(self, timeout_s: float) -> bool:
        chunk = self.link.read_chunk(timeout_s)
        if not chunk:
            return False
        self._take(chunk)
        return True

    def _take(self, chunk: bytes) -> None:
        """Replies read from the port: to the core, and what it reports to the handlers."""
        self._last_rx = time.monotonic()
        events = self.engine.receive(chunk)
        self._note_progress()
        if events:
            self._handle(events)
        if self.engine.probe_wanted:
            self._hold_until = time.monotonic() + self._settle_s
            self._probe_after_hold = True

    def _end_hold(self) -> None:
        self._hold_until = 0.0
        if self._probe_after_hold:
            self._probe_after_hold = False
            probe = self.engine.probe()
            if probe:
                self.link.write_all(probe)

    def _note_progress(self) -> None:
        """An acknowledged line is progress (and ends a wait for the user); replies alone are not."""
        acked = self.engine.lines_acked
        if acked != self._acked_seen:
            now = time.monotonic()
            if acked > self._acked_seen and not self._probes:
                gap_s = (now - self._last_progress) / (acked - self._acked_seen)
                self._ack_gap_s += 0.3 * (min(gap_s, self.settings.tickle_s) - self._ack_gap_s)
            self._acked_seen = acked
            self._last_progress = now
            self._peaks.clear()
            self._probes = 0
            self._user_wait = False  # the line the firmware waited on went through

    def _report_user_wait(self, waiting: bool, detail: str) -> None:
        """Tell the job, once each, when the firmware starts and stops waiting for a person.  A wait is
        known by the acknowledged-line count it began at: two filament changes a few lines apart are
        two waits even when no check fell between them."""
        at = self.engine.lines_acked if waiting else None
        if at != self._user_wait_at:
            if self._user_wait_at is not None:
                self.sink.on_state("printing", USER_ANSWERED, "printer")
            if waiting:
                self.sink.on_state("waiting_user", detail, "printer")
            self._user_wait_at = at

    def current_phase(self) -> Phase:
        """The phase the lines in flight put the printer in, with its bound (liveness.py)."""
        temps = self._last_temps
        known = {} if temps is None else {"hotend": temps.hotend_c, "bed": temps.bed_c}
        known = self._peaks.applied_to(known)
        # lines counted as done on a refusal's word may still be running (an M109 queued behind a long wait)
        in_flight = _commands_of(self.engine.maybe_running() + self.engine.unacked_commands())
        return phase_of(in_flight, reply_timeout_s=self.settings.reply_timeout_s,
                        long_timeout_s=self.settings.long_timeout_s, profile=self.profile, temperatures=known,
                        user_wait=self._user_wait, queued_move=self._queued_move())

    def _queued_move(self) -> tuple[float, str]:
        """The longest move the firmware may still be executing (liveness.longest_move_s), cached per
        acknowledged line: the last 2 x ``planner_depth`` lines (the planner's moves are among them),
        read after a look-back that places the axes and the feed rate."""
        if time.monotonic() - self._last_progress < self.settings.reply_timeout_s / 2:
            return 0.0, ""  # far from any bound: not worth timing moves on every check while streaming
        acked = self.engine.lines_acked
        if self._queued_move_at[0] != acked:
            depth = self.profile.planner_depth if self.profile is not None else 16
            frames = _commands_of(self.engine.acked_frames(2 * depth + MOTION_LOOKBACK_LINES))
            self._queued_move_at = (acked, longest_move_s(frames, self.profile,
                                                          timed_from=max(0, len(frames) - 2 * depth)))
        return self._queued_move_at[1]

    def _check_timeouts(self, job_active: bool) -> None:
        if self._answer_user.is_set():
            self._answer_user_wait()
        now = time.monotonic()
        engine = self.engine
        if engine.inflight:
            silence_s = now - self._last_progress
            phase = self.current_phase()
            self._report_user_wait(phase.name == "waiting_user", phase.detail)
            self._phase = phase
            if silence_s >= phase.bound_s:
                self._fail_safe(f"no line acknowledged for {silence_s:.0f} s ({phase.name}: {phase.detail}; "
                                f"bound {phase.bound_s:.0f} s)")
            # probes: the k-th after k intervals more (backing off: each probe adds bytes), an interval
            # being a few typical acknowledgement gaps while streaming, capped at tickle_s; within a long
            # phase the bound spread over max_probes
            if phase.name == "streaming":
                interval_s = min(self.settings.tickle_s, max(MIN_TICKLE_S, TICKLE_GAPS * self._ack_gap_s))
            else:
                interval_s = min(phase.bound_s, self.settings.long_timeout_s) / max(1, self.settings.max_probes + 1)
            due_s = sum(min(self.settings.tickle_s if phase.name == "streaming" else interval_s * k,
                            interval_s * k) for k in range(1, self._probes + 2))
            if silence_s >= due_s and phase.name != "waiting_user":
                if self._probes == 0:
                    self._first_probe_t = now
                elif self._probes >= self.settings.max_probes and self._last_rx < self._first_probe_t:
                    self._fail_safe(f"the printer stopped answering: nothing received for {now - self._last_rx:.0f} s "
                                    f"with {engine.inflight} line(s) in flight ({self._probes} probes unanswered)")
                self._probes += 1
                log.info("no line acknowledged for %.1f s with %d line(s) in flight: probing (%d)",
                         silence_s, engine.inflight, self._probes)
                probe = engine.probe()
                if probe:
                    self.link.write_all(probe)
        else:
            self._last_progress = now
            self._peaks.clear()
            self._probes = 0
            self._report_user_wait(False, "")
        # without autoreport the M105 polls queue behind a long command (G28, G29, a heating wait): no
        # temperature comes until it ends, and the phase's bound above, not the report silence, decides
        long_without_reports = not self.autoreport and self._phase is not None and self._phase.name != "streaming" \
            and engine.inflight
        violation = None if long_without_reports else self.watchdog.check_silence(now)
        if violation is not None:
            self._emergency_stop(violation)

    def _fail_safe(self, reason: str) -> None:
        """The link is wedged: heaters off without the firmware's queue, then fail with the reason.

        With Marlin's emergency parser (``Cap:EMERGENCY_PARSER``) ``M108`` (leave a heating wait) and
        ``M112`` act as the bytes arrive, whatever the queue holds: M112 kills the heaters.  Without it,
        the port is closed with a DTR pulse: boards wired for auto-reset reboot, heaters off."""
        how = self._heaters_off_now()
        log.error("printer: %s: failing safe (%s)", reason, how)
        self.sink.on_emergency(f"{reason}; failed safe: {how}")
        raise PrinterFault(f"{reason}; failed safe: {how}")

    def _heaters_off_now(self) -> str:
        if self.emergency_parser:
            try:
                self.link.write_all(b"M108\nM112\n")
                return "heaters off by M112 through the emergency parser"
            except LinkClosed:
                pass
        self.link.reset_board()
        return "port closed with a DTR pulse (the board resets, heaters off)"

    def _handle(self, events: list[tuple[int, bytes, object]]) -> None:
        for kind, line, value in events:
            if kind == EV.EV_TEMPERATURE:
                if value is not None:
                    self._on_temperatures(value)  # type: ignore[arg-type]
            elif kind == EV.EV_RESEND:
                self._on_resend(value)  # type: ignore[arg-type]
            elif kind == EV.EV_FATAL:
                raise PrinterFault(f"printer reported: {line.decode(errors='replace')}")
            elif kind == EV.EV_START:
                raise FirmwareReset("the printer restarted (firmware printed 'start')")
            elif kind == EV.EV_ACTION:
                action = bytes(value).decode(errors="replace")  # type: ignore[arg-type]
                log.info("printer asks: //action:%s", action)
                if action == "pause":
                    self.pause(self.action_pause, asked_by="printer")
                elif action == "paused":  # the firmware paused itself (M600, M0): it waits for the user
                    self._user_wait = True
                elif action == "resume":
                    self._resume_asked_by = "printer"
                    self._paused.clear()
                elif action == "cancel":
                    self._cancel.set()
            elif kind in (EV.EV_CAPABILITY, EV.EV_FIRMWARE):
                if self._collect is not None:
                    self._collect.append(line.decode(errors="replace"))
            elif kind == EV.EV_BUSY:
                if b"paused for user" in line or b"paused for input" in line:
                    self._user_wait = True
            elif kind == EV.EV_ERROR:
                log.debug("printer: %s", line.decode(errors="replace"))

    def _on_resend(self, number: int | None) -> None:
        self._hold_until = time.monotonic() + self._settle_s
        if number is None:
            return
        if number == self._last_resend and self.engine.last_acked <= self._acked_at_resend:
            self._resend_streak += 1
            if self._resend_streak > self.settings.max_consecutive_resends:
                self._fail_safe(f"line {number} refused {self._resend_streak} times in a row: "
                                "the link is too noisy to print safely (or the line never fits the printer's "
                                "receive buffer)")
        else:
            self._resend_streak = 1
        self._last_resend = number
        self._acked_at_resend = self.engine.last_acked

    def _on_temperatures(self, raw: tuple[float, float, float | None, float | None, float | None, float | None]) -> None:
        hot, hot_target, bed, bed_target, hot_pwm, bed_pwm = raw
        report = TemperatureReport(
            hotend_c=hot, hotend_target_c=hot_target, bed_c=bed or 0.0, bed_target_c=bed_target or 0.0,
            hotend_pwm=None if hot_pwm is None else min(1.0, hot_pwm / PWM_MAX),
            bed_pwm=None if bed_pwm is None else min(1.0, bed_pwm / PWM_MAX))
        self._last_temps = report
        self._peaks.observe("hotend", hot)
        self._peaks.observe("bed", bed)
        self.sink.on_temperatures(report)
        sim_s, real_s = self.clock.time(), time.monotonic()
        for heater, temp, target, pwm in (("hotend", report.hotend_c, report.hotend_target_c, report.hotend_pwm),
                                          ("bed", report.bed_c, report.bed_target_c, report.bed_pwm)):
            violation = self.watchdog.observe(heater, temp, target, pwm, sim_s, real_s)
            if violation is not None:
                self._emergency_stop(violation)

    def _emergency_stop(self, violation: ThermalViolation) -> None:
        reason = f"host thermal watchdog: {violation.reason}"
        log.error("%s: M112 and power off", reason)
        try:
            self.link.write_all(b"M112\n")  # Marlin's emergency parser acts on it at once
        except LinkClosed:
            pass
        self.sink.on_emergency(reason)
        raise PrinterFault(reason)

    # --- streaming --------------------------------------------------------------------------
    def checkpoint(self, request: PrintRequest) -> Checkpoint | None:
        engine = self.engine
        offsets = engine.acked_job_offsets(self.rewind_moves + 1)
        if not offsets:
            return None
        temps = self._last_temps
        return Checkpoint(byte_offset=offsets[0], resume_offset=offsets[-1] if len(offsets) > self.rewind_moves
                          else offsets[-1], line_number=engine.last_acked, lines_acked=engine.job_lines_acked,
                          hotend_target_c=temps.hotend_target_c if temps else 0.0,
                          bed_target_c=temps.bed_target_c if temps else 0.0, t_real_s=time.time())

    def _stream(self, request: PrintRequest) -> PrintOutcome:
        """Send the file from ``start_offset``, keeping the firmware's queue full."""
        self.sink.on_state("printing", request.job_id)
        self._user_wait, self._user_wait_at = False, None  # a wait of an earlier job ended with it
        started = time.monotonic()
        base_acked, base_resends = self.engine.job_lines_acked, self.engine.resends
        try:
            return self._stream_file(request, started)
        except CancelRequested:  # while a prologue or pause script waited for the printer
            return self._stop_job(request, started, base_acked, base_resends)

    def _stream_file(self, request: PrintRequest, started: float) -> PrintOutcome:
        engine = self.engine
        fast = self._wanted_report_s(idle=False)
        if self.autoreport and self.report_interval_s != fast:  # a job: reports at the full rate
            self.command(b"M155 S%d" % fast)
            self.report_interval_s = fast
        for command in request.prologue:
            self.command(command)
        base_acked, base_resends = engine.job_lines_acked, engine.resends
        total = request.path.stat().st_size
        splitter = streamcore.LineSplitter(request.start_offset)
        layers = LayerMarks(request.start_offset)
        last_checkpoint = last_progress = time.monotonic()
        # refill the window once the receive buffer is down to 3/4 (the wire never idles), or, when the
        # firmware answers faster than any link could pace it, to a quarter (several lines per write
        # instead of one per reply; each write and each wake-up is a system call): see Pump
        rx = self.settings.rx_buffer_bytes
        slow_low_water, fast_low_water = (0, 0) if self.settings.ping_pong else (rx * 3 // 4, rx // 4)
        link = self.link
        with request.path.open("rb") as handle, link.streaming_mode(0.1) as reads:
            pump = self.pump = streamcore.Pump(engine, reads.fd, slow_low_water, fast_low_water,
                                               nap_s=self.settings.coalesce_s)
            handle.seek(request.start_offset)
            file_done = False
            while True:
                if not file_done and engine.pending < REFILL_BELOW_LINES:
                    chunk = handle.read(CHUNK_BYTES)
                    if chunk:
                        engine.push(splitter.feed(chunk))
                        layers.feed(chunk)
                    else:
                        engine.push(splitter.finish())
                        file_done = True
                if self._paused.is_set() and not self._cancel.is_set():
                    if self._hold_while_paused(request, total):
                        return self._suspended(request, started, base_acked, base_resends)
                if self._cancel.is_set() or self._stopping.is_set():
                    return self._stop_job(request, started, base_acked, base_resends)
                if self._hold_until:
                    if time.monotonic() < self._hold_until:
                        self._pump(0.005)
                        continue
                    self._end_hold()
                # the native pump writes, waits and parses until something needs Python (see Pump)
                try:
                    status, events = pump.run(SLICE_S, 0 if file_done else REFILL_BELOW_LINES)
                except OSError as exc:
                    raise LinkClosed(f"{link.port}: {exc.strerror or exc}") from exc
                self._last_rx = max(self._last_rx, pump.last_rx)
                self._note_progress()
                if events:
                    self._handle(events)
                if engine.probe_wanted:
                    self._hold_until = time.monotonic() + self._settle_s
                    self._probe_after_hold = True
                if status == PUMP_IDLE and engine.inflight == 0:
                    if engine.bad_offset >= 0:
                        bad = engine.bad_offset
                        engine.drop_pending()
                        self._run_script(CANCEL_SCRIPT)
                        return PrintOutcome("failed", f"line at byte {bad} is longer than 4096 bytes", bad,
                                            engine.job_lines_acked - base_acked, engine.resends - base_resends,
                                            time.monotonic() - started, self.checkpoint(request))
                    if file_done and engine.pending == 0:
                        break
                elif status == PUMP_SILENT:
                    late = reads.check_hangup()
                    if late:
                        self._take(late)
                    else:
                        self._check_timeouts(job_active=True)
                now = time.monotonic()
                if now - last_progress >= 0.5:
                    last_progress = now
                    self._check_timeouts(job_active=True)
                    checkpoint = self.checkpoint(request)
                    done_offset = checkpoint.byte_offset if checkpoint else request.start_offset
                    self.sink.on_progress(request.job_id, done_offset, total, engine.job_lines_acked - base_acked)
                    if not self.autoreport and now - self._last_poll >= self.settings.poll_interval_s:
                        self._last_poll = now
                        engine.inject(b"M105")
                    new_layer = layers.passed(done_offset) > 0 and now - last_checkpoint >= LAYER_CHECKPOINT_MIN_S
                    if checkpoint is not None and (new_layer or
                                                   now - last_checkpoint >= self.settings.checkpoint_interval_s):
                        last_checkpoint = now
                        self.sink.on_checkpoint(request.job_id, checkpoint)
        final = self.checkpoint(request)
        self.command(b"M400")  # 'ok' means planned; wait until executed
        self.sink.on_progress(request.job_id, total, total, engine.job_lines_acked - base_acked)
        return PrintOutcome("completed", "all lines executed", total, engine.job_lines_acked - base_acked,
                            engine.resends - base_resends, time.monotonic() - started, final)

    def _run_script(self, script: tuple[bytes, ...] | list[bytes]) -> None:
        for command in script:
            self.command(command)

    def _stop_job(self, request: PrintRequest, started: float, base_acked: int, base_resends: int) -> PrintOutcome:
        """Cancel (or the node stopping): within CANCEL_WITHIN_S whatever the link does.

        The lines in flight get CANCEL_DRAIN_S to finish, the cancel script (heaters off, lift, motors
        off) the rest; a printer that acknowledges neither in time is made safe without its queue
        (_heaters_off_now) and the job still ends now."""
        engine = self.engine
        engine.drop_pending()
        begun = time.monotonic()
        wedged = ""
        while engine.inflight and time.monotonic() - begun < CANCEL_DRAIN_S:
            self._flush_out()
            self._pump(0.05)
        if engine.inflight:
            wedged = f"{engine.inflight} line(s) in flight not acknowledged within {CANCEL_DRAIN_S:.0f} s"
        checkpoint = self.checkpoint(request)
        if self._stopping.is_set() and not self._cancel_requested_by_user():
            if checkpoint is not None:
                self.sink.on_checkpoint(request.job_id, checkpoint)
            return PrintOutcome("interrupted", "the node is stopping", checkpoint.byte_offset if checkpoint else 0,
                                engine.job_lines_acked - base_acked, engine.resends - base_resends,
                                time.monotonic() - started, checkpoint)
        if not wedged:
            try:
                for command in CANCEL_SCRIPT:
                    self.command(command, deadline=begun + CANCEL_WITHIN_S)
            except PrinterFault as exc:
                wedged = f"the cancel script was not acknowledged in time ({exc})"
        reason = "cancelled"
        if wedged:
            how = self._heaters_off_now()
            log.error("printer: cancel: %s: %s", wedged, how)
            self.sink.on_emergency(f"cancel: {wedged}; {how}")
            reason = f"cancelled; {wedged}: {how}"
        return PrintOutcome("cancelled", reason, checkpoint.byte_offset if checkpoint else 0,
                            engine.job_lines_acked - base_acked, engine.resends - base_resends,
                            time.monotonic() - started, checkpoint)

    def _cancel_requested_by_user(self) -> bool:
        return self._cancel.is_set() and not self._stopping.is_set()

    def _hold_while_paused(self, request: PrintRequest, total: int) -> bool:
        """Drain the window, park, heaters per the pause's plan; send nothing of the job until
        resumed, cancelled or suspended.  True when the pause ended in a suspension."""
        engine = self.engine
        engine.hold_job_lines = True  # the queued job lines wait: only those in flight finish
        try:
            return self._hold(request, total)
        finally:
            engine.hold_job_lines = False

    def _hold(self, request: PrintRequest, total: int) -> bool:
        engine = self.engine
        while engine.inflight:  # the lines in flight finish first, within their phase's bound
            if self._cancel.is_set() or self._stopping.is_set():
                return False  # the stream loop ends the job (_stop_job)
            self._flush_out()
            self._pump(0.1)
            self._check_timeouts(job_active=True)
        checkpoint = self.checkpoint(request)
        self.sink.on_progress(request.job_id, checkpoint.byte_offset if checkpoint else request.start_offset,
                              total, engine.job_lines_acked)
        plan = self._pause_plan
        temps = self._last_temps
        targets = Targets(hotend_c=temps.hotend_target_c if temps else 0.0,
                          bed_c=temps.bed_target_c if temps else 0.0)
        self._pause_targets = targets
        position = self._query_position()
        modes = _modes_after(request.path, checkpoint.byte_offset) if checkpoint else None
        self._run_script(park_script(plan))
        self.sink.on_state("paused", request.job_id, self._pause_asked_by)
        paused_at_s = self.clock.time()
        hotend_on = not plan.hotend_off
        while self._paused.is_set() and not self._cancel.is_set() and not self._stopping.is_set():
            if self._suspend.is_set():
                self._parked_z = self._query_position().get("Z")
                self._run_script(suspend_script())
                return True
            if hotend_on and plan.hotend_off_after_s and self.clock.time() - paused_at_s >= plan.hotend_off_after_s:
                log.info("paused for %.0f s: hotend off (the filament must not cook in the heat break)",
                         plan.hotend_off_after_s)
                self.command(b"M104 S0")
                hotend_on = False
            self._idle(max_wait_s=0.1, job_held=True)
        if self._cancel.is_set() or self._stopping.is_set():
            return False
        self.sink.on_state("printing", request.job_id, self._resume_asked_by)
        self._run_script(reheat_script(targets) + unpark_script(position, modes))
        return False

    def _suspended(self, request: PrintRequest, started: float, base_acked: int, base_resends: int) -> PrintOutcome:
        """The print ends as ``suspended``.  Every acknowledged line was executed (the window was
        drained and M400 waited for the moves), so the checkpoint resumes exactly after the last
        one: no rewind, nothing repeated."""
        engine = self.engine
        engine.drop_pending()  # the rest of the file is read again on resume
        checkpoint = self.checkpoint(request)
        if checkpoint is not None:
            targets = self._pause_targets  # the job's own, not the zeros the suspension set
            checkpoint = replace(checkpoint, resume_offset=_line_end(request.path, checkpoint.byte_offset),
                                 hotend_target_c=targets.hotend_c, bed_target_c=targets.bed_c,
                                 head_z_mm=self._parked_z)
            self.sink.on_checkpoint(request.job_id, checkpoint)
        return PrintOutcome("suspended", "suspended: heaters and steppers off",
                            checkpoint.byte_offset if checkpoint else request.start_offset,
                            engine.job_lines_acked - base_acked, engine.resends - base_resends,
                            time.monotonic() - started, checkpoint)

    def _query_position(self) -> dict[str, float]:
        """M400 then M114: where the head is, for the pause/resume moves."""
        self.command(b"M400")
        lines: list[str] = []
        original = self._handle

        def grab(events: list[tuple[int, bytes, object]]) -> None:
            for kind, line, _ in events:
                if kind == EV.EV_OTHER and line.startswith(b"X:"):
                    lines.append(line.decode(errors="replace"))
            original([e for e in events if e[0] != EV.EV_OTHER])

        self._handle = grab  # type: ignore[method-assign]
        try:
            self.command(b"M114")
        finally:
            self._handle = original  # type: ignore[method-assign]
        position: dict[str, float] = {}
        if lines:
            for part in lines[-1].split(" Count")[0].split():
                if ":" in part:
                    axis, value = part.split(":", 1)
                    try:
                        position[axis] = float(value)
                    except ValueError:
                        pass
        return position


def _commands_of(frames: list[bytes | None]) -> list[bytes]:
    """``N12 M109 S200*57\\n`` -> ``M109 S200``: the commands of framed lines."""
    commands = []
    for framed in frames:
        if framed:
            body = framed.rsplit(b"*", 1)[0]
            commands.append(body.split(b" ", 1)[1] if body[:1] == b"N" and b" " in body else body)
    return commands


def _modes_after(path: Path, line_offset: int) -> ModalState:
    """The file's modes, feedrate and fan once the line at ``line_offset`` has run."""
    return state_at(path, _line_end(path, line_offset))


def _line_end(path: Path, line_offset: int) -> int:
    """The offset just past the line that starts at ``line_offset``."""
    with path.open("rb") as handle:
        handle.seek(line_offset)
        return line_offset + len(handle.readline())


def unpark_script(position: dict[str, float], modes: ModalState | None = None) -> list[bytes]:
    """Back above the part, down, prime the retraction, restore E, then the job's own modes."""
    x, y, z, e = (position.get(k, 0.0) for k in ("X", "Y", "Z", "E"))
    script = [b"G90", b"G1 X%.3f Y%.3f F6000" % (x, y), b"G1 Z%.3f F600" % z, b"M83",
              b"G1 E%.2f F2400" % RETRACT_MM, b"G92 E%.5f" % e]
    if modes is not None:  # G90/G91 set E's mode too (Marlin 2): M82/M83 after them
        script += [b"G90" if modes.absolute_xyz else b"G91", b"M82" if modes.absolute_e else b"M83",
                   b"G1 F%.0f" % modes.feedrate_mm_min]
    else:
        script.append(b"M82")
    return script
