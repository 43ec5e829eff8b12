"""The job runner: decides which job prints next and drives it through the state machine.

One job owns the printer at a time.  Before a job starts it passes, in order:
the plate gate (the plate must be confirmed clear after the previous print),
then every registered *start gate* (the energy planner registers one: "not
before 10:05, needs 310 Wh").  A gate that says no parks the job in
``waiting_plate`` or ``waiting_energy`` with the gate's reason; the runner
re-evaluates whenever the queue, the plate or a gate changes, and at least
every ``recheck_s``.

The runner never opens the port (the printer component does) and never
changes a job except through :class:`node.jobs.Jobs`.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from node.events import (
    USER_ANSWERED,
    EnergyPauseRequested,
    EnergyResumeAllowed,
    JobProgress,
    PlateCleared,
    PrinterState,
)
from node.jobs import ACTIVE_STATES, RUNNABLE_STATES, Job, Jobs, JobState, PauseReason, TransitionRefused
from node.node import Component, Node, wait_until_set
from node.printer.config import PrinterSection
from node.printer.pausing import HeaterPlan
from node.printer.profile import PrinterProfile
from node.section import Section
from node.store import Store

if TYPE_CHECKING:  # the printer stack loads with the daemon, not with node.config (which reads [jobs] here)
    from node.gate import JobGate
    from node.printer.printer import Printer

log = logging.getLogger(__name__)

#: the runner's recheck while no job is queued or held: every way a job becomes runnable sends
#: ``queue_changed`` (node/jobs.py), which wakes it at once
EMPTY_RECHECK_S = 60.0

PLATE_KEY = "plate_clear"


@dataclass(frozen=True)
class GateDecision:
    """A start gate's answer.  ``reason`` is what ``status`` shows (figures and times move with the
    forecast); ``waits_for``, when a gate gives one, names what the job waits for in words that do
    not move (``energy above the 30 % reserve``), so the log says it once, when it changes."""

    allowed: bool
    reason: str = ""
    waits_for: str | None = None


class WaitingLog:
    """Which waiting reasons are worth a log line: the first, and each change of what the job
    waits for (the gate and its ``waits_for``, else its whole reason).  Pure: no clock, no I/O."""

    def __init__(self) -> None:
        self._logged: tuple[str, str] | None = None  # (job id, what it waits for) last logged

    def should_log(self, job_id: str, waits_for: str) -> bool:
        if self._logged == (job_id, waits_for):
            return False
        self._logged = (job_id, waits_for)
        return True

    def clear(self) -> None:
        self._logged = None


StartGate = Callable[[Job], Awaitable[GateDecision]]
#: given the runnable jobs (priority, then queue order), the id of the one to try first (or None: the head)
JobChooser = Callable[[], str | None]


class JobsSection(Section):
    """``[jobs]``: the queue — sample parts, the plate gate's automatic confirmation, file size."""

    queue_sample_when_empty: bool = Field(True, description="queue the built-in sample jobs at start if nothing is pending")
    sample_jobs: int = Field(1, ge=1, le=20, description="how many (parts of growing size: a day's work for make run)")
    auto_plate_clear: bool | None = Field(None, description="confirm the plate clear by itself; default: only with the virtual printer")
    max_file_mb: float = Field(512.0, gt=0)
    reserve_mb: float = Field(64.0, ge=0, description="free space uploads and hub downloads must leave, so the "
                                                      "outcome of a print can always be recorded")

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def reserve_bytes(self) -> int:
        return int(self.reserve_mb * 1024 * 1024)


class JobRunner(Component):
    """Reads ``[jobs]`` (the queue's settings); the printer's pause policies and resume switches
    come with ``printer_config``; every file passes ``gate`` (:mod:`node.gate`) before it is
    queued or resumed."""

    name = "runner"
    section = "jobs"

    def __init__(self, node: Node, config: JobsSection, *, printer_config: PrinterSection,
                 gate: JobGate, profile: PrinterProfile, auto_plate_clear: bool, store: Store,
                 jobs: Jobs, printer: Printer, files_dir: Path, recheck_s: float = 5.0) -> None:
        super().__init__(node, config)
        self.config: JobsSection = config
        self.printer_config = printer_config
        self.gate = gate
        self.profile = profile
        self.auto_plate_clear = auto_plate_clear
        self.store = store
        self.jobs = jobs
        self.printer = printer
        self.files_dir = files_dir
        self.recheck_s = recheck_s
        self.current_job_id: str | None = None
        self.plate_clear = True
        self._gates: list[tuple[str, StartGate]] = []
        self._gate_order: dict[str, int] = {}
        self._chooser: JobChooser | None = None
        self._waiting: dict[str, str] = {}  # job id -> why it waits now (the job tried first)
        self._waiting_log = WaitingLog()
        self._suspend_why: dict[str, tuple[PauseReason | None, str]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._nothing_held = False  # the last look found no runnable job and none owning the printer
        self._last_progress_log = 0.0
        #: byte offset of the running job's first extruding line (None: it never extrudes)
        self._first_extrusion: dict[str, int | None] = {}

    # --- seams for other components ---------------------------------------------------------
    def add_start_gate(self, name: str, gate: StartGate, order: int = 50) -> None:
        """Register a check every job must pass before it starts (e.g. the energy planner).

        Gates run by ``order``, then registration: hard safety first (the battery guard, 10-20),
        so a job's reason names the real obstacle; the energy plan (50); the printer's power last
        (90), because that gate switches the printer on and may only run once the rest said yes."""
        self._gates.append((name, gate))
        self._gate_order[name] = order
        self._gates.sort(key=lambda entry: self._gate_order[entry[0]])  # stable: registration order kept

    def set_job_chooser(self, chooser: JobChooser) -> None:
        """Let a planner say which runnable job goes first (it may backfill past the queue's head)."""
        self._chooser = chooser

    def wake(self) -> None:
        self._wake.set()

    @property
    def idle(self) -> asyncio.Event:
        """Set while nothing is runnable and nothing owns the printer."""
        return self._idle

    # --- lifetime ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.plate_clear = await self.store.run(
            lambda c: self.store.get_meta(c, PLATE_KEY, "1") == "1")
        for job in await self.jobs.list(frozenset({JobState.PRINTING, JobState.PAUSED})):
            if await self._extruded_before(job):
                await self.set_plate_clear(False)
            await self.jobs.transition(job.id, JobState.INTERRUPTED, "the node restarted while the job owned the printer")
        if self.config.queue_sample_when_empty and not await self.jobs.list(RUNNABLE_STATES | ACTIVE_STATES, limit=1):
            for index in range(self.config.sample_jobs):
                await self.queue_sample(index)
        for event in ("queue_changed", "plate_cleared", "plan_updated"):
            self.node.register_event_handler(event, lambda _payload: self.wake())
        self.node.register_event_handler("printer_state", self._on_printer_state)
        self.node.register_event_handler("job_progress", self._on_progress)
        self.node.register_event_handler("energy_pause_requested", self._on_energy_pause)
        self.node.register_event_handler("energy_resume_allowed", self._on_energy_resume)
        self.node.spawn(self._loop(), "job-runner")

    def status(self) -> dict[str, Any]:
        return {"current_job": self.current_job_id, "plate_clear": self.plate_clear, "waiting": self._waiting,
                "idle": self._idle.is_set(), "gates": [name for name, _ in self._gates]}

    # --- queue operations (control API, sync) -----------------------------------------------
    async def queue_file(self, name: str, source_path: Path, sha256: str, size_bytes: int,
                         priority: int = 0, source: str = "cli") -> Job:
        """Queue a file already stored under ``files_dir`` by its sha256, or reject it at the gate
        (the job is kept, ``rejected``, with the line and the reason)."""
        refusal = await self.gate.refusal(source_path)
        if refusal is not None:
            job = await self.jobs.create(name, source, state=JobState.RECEIVED, priority=priority,
                                         file_path=str(source_path), file_sha256=sha256, file_bytes=size_bytes)
            log.warning("job %s (%s) rejected: %s", job.id, name, refusal)
            return await self.jobs.transition(job.id, JobState.REJECTED, refusal)
        return await self.jobs.create(name, source, priority=priority, file_path=str(source_path),
                                      file_sha256=sha256, file_bytes=size_bytes)

    async def queue_sample(self, index: int = 0) -> Job:
        """Queue generated sample part ``index`` (0: the small tube; each next one taller and wider)."""
        import hashlib

        from node.gcode.sample import sample_job
        name, text = sample_job(self.profile, index)
        data = text.encode()
        sha = hashlib.sha256(data).hexdigest()
        path = self.files_dir / f"{sha}.gcode"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        job = await self.queue_file(name, path, sha, len(data), source="sample")
        log.info("queued the sample job %s (%d bytes)", job.id, len(data))
        return job

    async def set_plate_clear(self, clear: bool, source: str = "cli") -> None:
        """Record the plate's state; a person (or the hub) may confirm it clear only while no job
        is on the printer."""
        if clear and self.current_job_id is not None:
            raise TransitionRefused(f"job {self.current_job_id} is on the printer: the plate cannot be clear yet")
        self.plate_clear = clear
        await self.store.run(lambda c: self.store.set_meta(c, PLATE_KEY, "1" if clear else "0"))
        if clear:
            await self.node.send_event("plate_cleared", PlateCleared(t_s=self.node.clock.time(), source=source))  # type: ignore[arg-type]

    async def pause(self, job_id: str, reason: PauseReason = PauseReason.USER) -> Job:
        """Pause at the next safe point; heaters and a later suspension per ``[printer.pause.<reason>]``."""
        job = await self.jobs.find(job_id)
        if job.state != JobState.PRINTING or job.id != self.current_job_id:
            raise TransitionRefused(f"job {job.id} is {job.state}, not printing")
        paused = await self._pause(job, reason)
        self._schedule_suspend(paused, self.printer_config.pause.for_reason(reason).suspend_after_s)
        return paused

    async def _pause(self, job: Job, reason: PauseReason) -> Job:
        self.printer.pause(HeaterPlan.from_policy(self.printer_config.pause.for_reason(reason)))
        return await self.jobs.transition(job.id, JobState.PAUSED, f"paused: {reason}", pause_reason=reason)

    async def suspend(self, job_id: str, reason: PauseReason, why: str) -> Job:
        """Pause (if printing), then end the print with the printer off: ``suspended``.  It comes
        back through the power-loss resume path when every start gate allows (``_try_start_next``)."""
        job = await self.jobs.find(job_id)
        if job.id != self.current_job_id or job.state not in (JobState.PRINTING, JobState.PAUSED):
            raise TransitionRefused(f"job {job.id} is {job.state}: only a print of this run is suspended")
        if job.state == JobState.PRINTING:
            await self._pause(job, reason)
        self._suspend_why[job.id] = (job.pause_reason or reason, why)
        log.warning("job %s: suspending (%s)", job.id, why)
        self.printer.suspend()  # the print loop records ``suspended`` once the printer is parked and cold
        return await self.jobs.find(job.id)

    def _schedule_suspend(self, paused: Job, after_s: float | None) -> None:
        if after_s is None:
            return

        async def later() -> None:
            if after_s > 0:
                await self.node.clock.sleep(after_s)
            current = await self.jobs.get(paused.id)
            if current is not None and current.version == paused.version and self.current_job_id == paused.id:
                await self.suspend(paused.id, paused.pause_reason or PauseReason.USER,
                                   f"paused for {paused.pause_reason} {after_s:.0f} s: printer off")

        self.node.spawn(later(), f"suspend-{paused.id}")

    async def resume(self, job_id: str) -> Job:
        job = await self.jobs.find(job_id)
        if job.state in (JobState.INTERRUPTED, JobState.SUSPENDED):
            # a person's resume overrides the energy and battery gates, not the printer's power
            decision = await self._run_gates(job, only=("printer_power",))
            if not decision.allowed:
                raise TransitionRefused(f"job {job.id}: {decision.reason}")
            return await self.resume_interrupted(job)
        if job.state != JobState.PAUSED or job.id != self.current_job_id:
            raise TransitionRefused(f"job {job.id} is {job.state}; only a paused job of this run resumes")
        moved = await self.jobs.transition(job.id, JobState.PRINTING, "resumed")
        self.printer.resume()
        return moved

    async def cancel(self, job_id: str, reason: str = "cancelled by user") -> Job:
        job = await self.jobs.find(job_id)
        if job.id == self.current_job_id and job.state in (JobState.PRINTING, JobState.PAUSED):
            self.printer.cancel()  # the print loop records the outcome
            for _ in range(600):
                await asyncio.sleep(0.05)
                job = await self.jobs.find(job_id)
                if job.state == JobState.CANCELLED:
                    return job
            raise TimeoutError(f"job {job.id} did not stop within 30 s")
        return await self.jobs.transition(job.id, JobState.CANCELLED, reason)

    async def resume_interrupted(self, job: Job) -> Job:
        """Continue a job the printer lost (reset, power loss, node restart) from its checkpoint."""
        from node.printer.resume import resume_script, state_at

        if self.current_job_id is not None:
            raise TransitionRefused(f"job {self.current_job_id} owns the printer")
        if not self.printer.ready:
            raise TransitionRefused(f"the printer is {self.printer.state}, not ready: resume when it is back")
        if job.file_path is None or not Path(job.file_path).exists():
            raise TransitionRefused(f"job {job.id}: its file is missing")
        refusal = await self.gate.refusal(Path(job.file_path))
        if refusal is not None:
            raise TransitionRefused(f"job {job.id} may not resume: {refusal}")
        from node.printer.printer import load_checkpoint

        checkpoint = await self.store.run(lambda c: load_checkpoint(c, job.id))
        path = Path(job.file_path)
        start_offset = checkpoint.resume_offset if checkpoint is not None else 0
        state = await asyncio.to_thread(state_at, path, start_offset)
        prologue = resume_script(state, checkpoint.hotend_target_c if checkpoint else 0.0,
                                 checkpoint.bed_target_c if checkpoint else 0.0,
                                 checkpoint.head_z_mm if checkpoint else None) if start_offset else ()
        log.info("job %s resumes at byte %d (layer %d, Z %.2f, E %.3f)", job.id, start_offset, state.layer,
                 state.z, state.e)
        self.current_job_id = job.id
        moved = await self.jobs.transition(job.id, JobState.PRINTING, f"resumed at byte {start_offset}")
        self.node.spawn(self._drive(moved, start_offset, prologue), f"resume-{job.id}")
        return moved

    # --- the loop ---------------------------------------------------------------------------
    async def _on_printer_state(self, event: PrinterState) -> None:
        """The firmware paused or resumed the print itself (``//action:pause|resume``), or waits for a
        person at the printer (M0/M1/M600, ``paused for user``): the job follows, so the operator sees
        it paused with the printer's reason instead of a print that silently stands still.

        Only the firmware's pauses: the printer also says "paused" and "printing" when it parks and
        unparks for the node's own pause, and a pause taken back before the park was done arrives after
        the job is printing again (it is not the printer asking)."""
        job_id = self.current_job_id
        if job_id is not None and event.state == "waiting_user":
            job = await self.jobs.get(job_id)
            if job is not None and job.state == JobState.PRINTING:
                await self.jobs.transition(job_id, JobState.PAUSED, f"waiting for you at the printer: {event.detail}",
                                           pause_reason=PauseReason.PRINTER)
        elif job_id is not None and event.state == "printing" and event.detail == USER_ANSWERED:
            job = await self.jobs.get(job_id)
            if job is not None and job.state == JobState.PAUSED and job.pause_reason == PauseReason.PRINTER:
                await self.jobs.transition(job_id, JobState.PRINTING, "resumed: the user answered the printer")
        elif (job_id is not None and event.detail == job_id and event.state in ("paused", "printing")
                and event.asked_by == "printer"):
            job = await self.jobs.get(job_id)
            if job is not None and event.state == "paused" and job.state == JobState.PRINTING:
                await self.jobs.transition(job_id, JobState.PAUSED, "paused: the printer asked (//action:pause)",
                                           pause_reason=PauseReason.PRINTER)
            elif job is not None and event.state == "printing" and job.state == JobState.PAUSED:
                # the person at the printer resumed it (the knob, or its own runout sensor cleared)
                await self.jobs.transition(job_id, JobState.PRINTING, "resumed: the printer asked (//action:resume)")
        self.wake()

    async def _on_progress(self, event: JobProgress) -> None:
        if event.job_id == self.current_job_id and self.plate_clear and self._extruded(event.job_id, event.bytes_done):
            await self.set_plate_clear(False)  # plastic is on the plate from now on, whatever happens next
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._last_progress_log >= self.printer_config.progress_interval_s or event.percent >= 100:
            self._last_progress_log = loop_now
            log.info("job %s: %5.1f %% (%d lines, %s printing)", event.job_id, event.percent,
                     event.lines_sent, _hms(event.elapsed_s))

    async def _on_energy_pause(self, event: EnergyPauseRequested) -> None:
        """The planner says the running print cannot finish above the reserve: pause it (heaters per
        ``[printer.pause.energy]``), or with ``printer_off`` suspend it."""
        job = await self.jobs.get(event.job_id)
        if job is None or job.id != self.current_job_id:
            return
        if event.printer_off and job.state in (JobState.PRINTING, JobState.PAUSED):
            await self.suspend(job.id, PauseReason.ENERGY, event.reason)
        elif job.state == JobState.PRINTING:
            await self.pause(job.id, PauseReason.ENERGY)
            log.warning("job %s paused: %s", job.id, event.reason)

    async def _on_energy_resume(self, event: EnergyResumeAllowed) -> None:
        job = await self.jobs.get(event.job_id)
        if job is not None and job.state == JobState.PAUSED and job.pause_reason == PauseReason.ENERGY:
            log.info("job %s resumes: %s", job.id, event.reason)
            await self.resume(job.id)
        elif job is not None and job.state == JobState.SUSPENDED:
            self.wake()  # the loop resumes it through the gates (the printer's power among them)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                started = await self._try_start_next()
            except Exception:
                log.exception("job runner: choosing the next job failed")
                started = False
            if started:
                continue
            # nothing queued and nothing held: only a queue change (an event that wakes the loop) can
            # give the runner work, so the time-driven recheck (gates that open with the sun) has
            # nothing to look at; the long one is a safety net only, not a poll
            await wait_until_set(self._wake, EMPTY_RECHECK_S if self._nothing_held else self.recheck_s)

    async def _try_start_next(self) -> bool:
        if self.current_job_id is None and await self._try_auto_resume():
            return True
        runnable = await self.jobs.list(RUNNABLE_STATES)
        # an interrupted job still sits on the plate: nothing new starts until it is resumed or cancelled
        active = await self.jobs.list(frozenset({JobState.PRINTING, JobState.PAUSED, JobState.INTERRUPTED,
                                                 JobState.SUSPENDED}))
        self._nothing_held = not runnable and not active
        if not runnable:
            if not active:
                self._idle.set()
            return False
        self._idle.clear()
        if active:
            return False
        chosen = self._chooser() if self._chooser else None
        job = next((j for j in runnable if j.id == chosen), runnable[0])
        if not self.plate_clear:
            if self.auto_plate_clear:
                await self.set_plate_clear(True, source="simulation")
            else:
                await self._park(job, JobState.WAITING_PLATE, "waiting for the plate to be confirmed clear")
                return False
        decision = await self._run_gates(job)
        if not decision.allowed:
            await self._park(job, JobState.WAITING_ENERGY, decision.reason, decision.waits_for)
            return False
        # after the gates: the last one (printer power, node/hw/relay.py) may switch the printer on
        if not self.printer.ready:
            return False
        await self._print(job)
        return True

    async def _try_auto_resume(self) -> bool:
        """Resume a suspended job (``auto_resume_suspended``) or an interrupted one (``auto_resume``)
        once every start gate says yes: the battery, the energy plan, the printer's power.  The plate
        gate does not apply: the part is still on it."""
        printer = self.printer_config
        wanted = frozenset(({JobState.SUSPENDED} if printer.auto_resume_suspended else set())
                           | ({JobState.INTERRUPTED} if printer.auto_resume else set()))
        if not wanted:
            return False
        held = await self.jobs.list(wanted, limit=1)
        if not held:
            return False
        job = held[0]
        decision = await self._run_gates(job)
        if not decision.allowed:
            self._note_waiting(job, decision.reason, decision.waits_for)
            return False
        try:
            await self.resume_interrupted(job)
            return True
        except TransitionRefused as exc:
            self._note_waiting(job, f"automatic resume refused: {exc}")
            return False

    async def _run_gates(self, job: Job, only: tuple[str, ...] | None = None) -> GateDecision:
        """The start gates in order (all, or the ``only`` ones); the first refusal names itself."""
        for name, gate in self._gates:
            if only is not None and name not in only:
                continue
            decision = await gate(job)
            if not decision.allowed:
                return GateDecision(False, f"{name}: {decision.reason}",
                                    f"{name}: {decision.waits_for}" if decision.waits_for else None)
        return GateDecision(True)

    def _note_waiting(self, job: Job, reason: str, waits_for: str | None = None) -> None:
        """``status`` shows the latest reason; the log says what the job waits for once, when that
        changes (not each time the forecast moves the window by five minutes)."""
        self._waiting = {job.id: reason}
        if self._waiting_log.should_log(job.id, waits_for or reason):
            log.info("job %s waits: %s", job.id, reason)

    async def _park(self, job: Job, state: JobState, reason: str, waits_for: str | None = None) -> None:
        """Hold a job with the gate's reason: a transition when the state changes; the reason itself
        (which moves as the forecast does) is kept in memory for ``status`` and logged only when it
        changes, so a waiting node writes nothing to the SD card every recheck."""
        if job.state != state:
            await self.jobs.transition(job.id, state, reason)
        self._note_waiting(job, reason, waits_for)

    async def _print(self, job: Job) -> None:
        self._waiting = {}
        self._waiting_log.clear()
        if job.file_path is None or not Path(job.file_path).exists():
            await self.jobs.transition(job.id, JobState.PRINTING, "starting")
            await self.jobs.transition(job.id, JobState.FAILED, "the job's file is missing from the store")
            return
        self.current_job_id = job.id
        from node.printer.printer import clear_checkpoint

        await self.store.run(lambda conn: clear_checkpoint(conn, job.id))
        await self.jobs.transition(job.id, JobState.PRINTING, "starting")
        log.info("job %s (%s) started", job.id, job.name)
        await self._drive(job, 0, ())

    async def _drive(self, job: Job, start_offset: int, prologue: tuple[bytes, ...]) -> None:
        """Stream the job (already ``printing``) and record how it ended."""
        assert job.file_path is not None
        self.current_job_id = job.id
        from node.gcode.extrusion import first_extrusion_offset

        self._first_extrusion[job.id] = await asyncio.to_thread(first_extrusion_offset, Path(job.file_path))
        try:
            outcome = await self.printer.print_job(job.id, Path(job.file_path), start_offset, prologue)
            target = {"completed": JobState.COMPLETED, "cancelled": JobState.CANCELLED,
                      "failed": JobState.FAILED, "interrupted": JobState.INTERRUPTED,
                      "suspended": JobState.SUSPENDED}[outcome.status]
            current = await self.jobs.get(job.id)
            assert current is not None
            if self.plate_clear and (target == JobState.COMPLETED or self._extruded(job.id, outcome.byte_offset)):
                # before the outcome is recorded: a resumed print runs beside the runner's loop,
                # which must never see the job ended with the plate still marked clear
                await self.set_plate_clear(False)
            if target == JobState.SUSPENDED:
                reason, why = self._suspend_why.pop(job.id, (current.pause_reason, outcome.reason))
                if current.state == JobState.PRINTING:  # resumed meanwhile: the pause it came from first
                    await self.jobs.transition(job.id, JobState.PAUSED, "paused to suspend",
                                               pause_reason=reason or PauseReason.USER)
                await self.jobs.transition(job.id, JobState.SUSPENDED, f"suspended: {why}", pause_reason=reason)
                log.warning("job %s suspended at byte %d: %s", job.id, outcome.byte_offset, why)
                return
            if current.state == JobState.PAUSED and target != JobState.CANCELLED:
                await self.jobs.transition(job.id, JobState.PRINTING, "resumed to finish")
            await self.jobs.transition(job.id, target, outcome.reason)
            log.info("job %s %s: %s (%d lines, %d resends)", job.id, target, outcome.reason,
                     outcome.lines_sent, outcome.resends)
        finally:
            self._first_extrusion.pop(job.id, None)
            self.current_job_id = None
            self.wake()

    def _extruded(self, job_id: str, acked_offset: int) -> bool:
        """Has the line at ``acked_offset`` (the last acknowledged) reached the job's first extrusion?"""
        first = self._first_extrusion.get(job_id)
        return first is not None and acked_offset >= first

    async def _extruded_before(self, job: Job) -> bool:
        """For a job the node lost mid-print: did its last checkpoint pass its first extrusion?"""
        from node.gcode.extrusion import first_extrusion_offset
        from node.printer.printer import load_checkpoint

        checkpoint = await self.store.run(lambda c: load_checkpoint(c, job.id))
        if checkpoint is None or job.file_path is None or not Path(job.file_path).is_file():
            return checkpoint is not None  # no file to read: assume the worst
        first = await asyncio.to_thread(first_extrusion_offset, Path(job.file_path))
        return first is not None and checkpoint.byte_offset >= first


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"
