"""Low-battery safety that comes back by itself: the PowerGuard component.

It acts on the battery levels the telemetry component reports
(:class:`~node.events.BatteryLevelChanged`, thresholds in
:mod:`node.power.thresholds`, ordered reserve > critical > node LVD >
controller LVD):

- ``critical``: pause the running print at the next safe point with reason
  ``low_battery`` (the printer's draw, mostly the bed, is what empties the
  bank); ``[printer.pause.low_battery]`` then, by default, suspends it at once:
  heaters and steppers off, exact checkpoint, relay off.  A print already paused
  for another reason is suspended too.  No print starts until the level is back
  to ``ok``.
- ``node_lvd``: the node itself must stop drawing.  Halt the Pi only when a
  power cycle is certain to wake it (``wake = "load_output"``: the charge
  controller's load output feeds the Pi and reconnects above its reconnect
  voltage; ``wake = "rtc"``: a Pi 5 wake alarm is set first), through logind
  (``systemctl poweroff``, allowed by the polkit rule in ``systemd/``, since the
  unit's ``NoNewPrivileges`` forbids sudo).  Otherwise it stays up and idle
  (a Pi draws about 2 W): a node that halts without a way back is a node
  someone must drive to.
- back to ``ok`` (the thresholds' hysteresis: reconnect voltage or SoC): a
  print merely paused for low battery resumes; a suspended one resumes through
  the runner's start gates (this guard's gate, the energy plan, the printer's
  power) and the power-loss resume path.

**Telemetry lost** (the charge controller unplugged, its cable cut, the device
dead: :class:`~node.events.TelemetryLink`).  The guard would be blind: the
levels above come from telemetry.  Policy (:func:`decide_blind`):

- at once: nothing changes.  A reopen of the port takes seconds, and a print
  already running was planned to finish with margin: it is not killed;
- the SoC is estimated on without measurements (the node's own known draw out,
  no PV in: :meth:`~node.power.battery.SocEstimator.bridge`), so it only errs
  towards empty;
- lost for ``telemetry.lost_hold_starts_after_s``: no new print starts (start
  gate ``telemetry``, its reason in ``status``);
- lost for ``telemetry.lost_pause_after_s``, or the blind estimate below the
  critical SoC: the running print pauses at a safe point (reason
  ``telemetry_lost``); the checkpoint is kept as for any pause;
- telemetry back: the gate reopens, and the print paused for the loss resumes
  unless the battery is critical (then it waits for ``ok``, like a low-battery
  pause).

Pure decisions (:func:`decide`, :func:`decide_blind`) are kept apart from the I/O so they are tested
without a battery.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from node.events import BatteryLevelChanged, TelemetryLink
from node.jobs import Job, JobState, PauseReason, TransitionRefused
from node.node import Component, Node
from node.power.config import LowBatterySection
from node.power.telemetry import Telemetry, duration_text
from node.runner import JobRunner

log = logging.getLogger(__name__)

Level = Literal["ok", "below_reserve", "critical", "node_lvd"]
SEVERITY: dict[str, int] = {"ok": 0, "below_reserve": 1, "critical": 2, "node_lvd": 3}


@dataclass(frozen=True)
class GuardAction:
    pause_running: bool = False
    hold_starts: bool = False
    resume_paused: bool = False
    halt: bool = False
    why: str = ""


def decide(level: Level, held: bool, wake: str, halt_enabled: bool) -> GuardAction:
    """What to do when the battery level moves to ``level``; ``held``: a critical level is still
    being held (starts refused since it), cleared only at ``ok`` -- so critical, then below the
    reserve, then ok, resumes too.  Pure."""
    if level == "node_lvd":
        certain = wake in ("load_output", "rtc")
        return GuardAction(pause_running=True, hold_starts=True, halt=halt_enabled and certain,
                           why="node low-voltage disconnect" + ("" if certain else
                                                                ": no certain wake-up, staying up idle"))
    if level == "critical":
        return GuardAction(pause_running=True, hold_starts=True, why="battery critical")
    if held:
        return GuardAction(resume_paused=level == "ok", hold_starts=level != "ok",
                           why=f"battery back to {level.replace('_', ' ')}")
    return GuardAction(why=f"battery {level}")


@dataclass(frozen=True)
class BlindAction:
    hold_starts: bool = False
    pause_running: bool = False
    why: str = ""


def decide_blind(lost_for_s: float | None, estimated_soc_pct: float | None, hold_after_s: float,
                 pause_after_s: float, critical_soc_pct: float) -> BlindAction:
    """What to do ``lost_for_s`` node seconds into a telemetry loss (None: not lost).  Pure.

    ``estimated_soc_pct`` is the pessimistic blind estimate (own draw out, no PV in).
    """
    if lost_for_s is None:
        return BlindAction()
    hold = lost_for_s >= hold_after_s
    if lost_for_s >= pause_after_s:
        return BlindAction(hold_starts=hold, pause_running=True,
                           why=f"telemetry lost for {duration_text(lost_for_s)} (limit "
                               f"{duration_text(pause_after_s)})")
    if estimated_soc_pct is not None and estimated_soc_pct < critical_soc_pct:
        return BlindAction(hold_starts=hold, pause_running=True,
                           why=f"telemetry lost and the estimated SoC ({estimated_soc_pct:.0f} %) is below the "
                               f"critical {critical_soc_pct:.0f} %")
    return BlindAction(hold_starts=hold, why=f"telemetry lost for {duration_text(lost_for_s)}")


class PowerGuard(Component):
    name = "power_guard"
    section = "low_battery"

    def __init__(self, node: Node, config: LowBatterySection, runner: JobRunner,
                 telemetry: Telemetry | None = None) -> None:
        super().__init__(node, config)
        self.config: LowBatterySection = config
        self.runner = runner
        #: the Telemetry component (its link state and blind estimate); None: no telemetry-lost policy
        self.telemetry = telemetry
        self.level: Level = "ok"
        self.last_action: GuardAction | None = None
        self.halt_requested = False
        self.holding = False  # starts refused since a critical level, until ``ok``
        self.blind = BlindAction()
        self._lost = asyncio.Event()

    async def start(self) -> None:
        self.node.register_event_handler("battery_level_changed", self._on_level)
        self.runner.add_start_gate("battery", self._gate, order=10)
        if self.telemetry is not None:
            self.node.register_event_handler("telemetry_link", self._on_link)
            self.runner.add_start_gate("telemetry", self._telemetry_gate, order=20)
            self.node.spawn(self._watch_blind(), "power_guard.blind")

    def status(self) -> dict[str, Any]:
        return {"level": self.level, "holding_starts": self.holding,
                "wake": self.config.wake, "halt_requested": self.halt_requested,
                "last_action": None if self.last_action is None else self.last_action.why,
                "telemetry_lost": self._lost.is_set(), "blind_holding_starts": self.blind.hold_starts,
                "blind_pausing": self.blind.pause_running, "blind_why": self.blind.why or None}

    # --- telemetry lost -----------------------------------------------------------------------
    def _blind_now(self) -> BlindAction:
        telemetry = self.telemetry
        if telemetry is None or telemetry.link != "lost":
            return BlindAction()
        settings = telemetry.settings
        soc = telemetry.estimator.soc
        critical = telemetry.battery.resolved_thresholds().critical_soc_pct
        return decide_blind(telemetry.lost_for_s(), None if soc is None else soc * 100.0,
                            settings.lost_hold_starts_after_s, settings.lost_pause_after_s, critical)

    async def _telemetry_gate(self, job: Job) -> Any:
        from node.runner import GateDecision

        self.blind = self._blind_now()
        if not self.blind.hold_starts:
            return GateDecision(True)
        telemetry = self.telemetry
        since = telemetry.lost_since_t_s
        when = "" if since is None else " since " + datetime.fromtimestamp(since, tz=UTC).strftime("%H:%M UTC")
        error = f" ({telemetry.last_error})" if telemetry.last_error else ""
        # no running duration in the reason: it is logged whenever it changes (status has lost_for_s)
        return GateDecision(False, f"{telemetry.settings.source} charge controller lost{when}{error}; no print "
                                   f"starts on a stale battery estimate")

    async def _on_link(self, event: TelemetryLink) -> None:
        if event.state == "lost":
            self._lost.set()
            return
        self._lost.clear()
        self.blind = BlindAction()
        job_id = self.runner.current_job_id
        if job_id is not None and SEVERITY[self.level] < SEVERITY["critical"]:
            job = await self.runner.jobs.get(job_id)
            if job is not None and job.state == JobState.PAUSED and job.pause_reason == PauseReason.TELEMETRY_LOST:
                log.info("job %s resumes: telemetry is back after %s", job_id, duration_text(event.lost_for_s))
                try:
                    await self.runner.resume(job_id)
                except TransitionRefused as exc:
                    log.warning("job %s: resume after telemetry returned refused: %s", job_id, exc)
        self.runner.wake()

    async def _watch_blind(self) -> None:
        """While telemetry is lost: hold starts, then pause the running print, as :func:`decide_blind` says."""
        while True:
            await self._lost.wait()
            action = self._blind_now()
            if action.hold_starts and not self.blind.hold_starts:
                log.warning("telemetry lost too long: no new print starts (%s)", action.why)
                self.runner.wake()
            self.blind = action
            job_id = self.runner.current_job_id
            if action.pause_running and job_id is not None:
                job = await self.runner.jobs.get(job_id)
                if job is not None and job.state == JobState.PRINTING:
                    log.warning("job %s paused: %s", job_id, action.why)
                    try:
                        await self.runner.pause(job_id, PauseReason.TELEMETRY_LOST)
                    except TransitionRefused as exc:  # it ended or paused meanwhile
                        log.info("job %s: pause for lost telemetry not needed: %s", job_id, exc)
            await asyncio.sleep(self._blind_poll_s())

    def _blind_poll_s(self) -> float:
        """Real seconds to the next limit (at most 1 s): the limits are node time, the loop real time."""
        telemetry = self.telemetry
        lost_for_s = telemetry.lost_for_s() if telemetry is not None else None
        if lost_for_s is None:
            return 0.5
        settings = telemetry.settings
        ahead = [limit - lost_for_s for limit in (settings.lost_hold_starts_after_s, settings.lost_pause_after_s)
                 if limit > lost_for_s]
        wall_s = self.node.clock.sim_to_wall_s(min(ahead)) if ahead else 1.0
        return min(1.0, max(0.05, wall_s))

    async def _gate(self, job: Job) -> Any:
        from node.runner import GateDecision

        if self.holding:  # the hysteresis: after a critical level, nothing starts or resumes until ``ok``
            return GateDecision(False, f"battery {self.level.replace('_', ' ')}: no print starts until it recovers")
        return GateDecision(True)

    async def _on_level(self, event: BatteryLevelChanged) -> None:
        self.level = event.level
        action = decide(event.level, self.holding, self.config.wake, self.config.halt_at_node_lvd)
        self.last_action = action
        self.holding = action.hold_starts
        job_id = self.runner.current_job_id
        if action.pause_running and job_id is not None:
            job = await self.runner.jobs.get(job_id)
            if job is not None and job.state == JobState.PRINTING:
                # [printer.pause.low_battery] decides what follows: by default everything off, suspended
                log.warning("job %s paused: %s (SoC %s %%)", job_id, action.why, event.soc_pct)
                await self.runner.pause(job_id, PauseReason.LOW_BATTERY)
            elif job is not None and job.state == JobState.PAUSED:
                # paused for another reason, heaters perhaps still on: the battery cannot carry that
                await self.runner.suspend(job_id, PauseReason.LOW_BATTERY, action.why)
        if action.resume_paused and job_id is not None:
            job = await self.runner.jobs.get(job_id)
            if job is not None and job.state == JobState.PAUSED and (
                    job.pause_reason == PauseReason.LOW_BATTERY
                    or (job.pause_reason == PauseReason.TELEMETRY_LOST and not self._lost.is_set())):
                log.info("job %s resumes: %s", job_id, action.why)
                await self.runner.resume(job_id)
        # a suspended job comes back through the runner's start gates (this guard's among them)
        if action.hold_starts or action.resume_paused:
            self.runner.wake()
        if action.halt and not self.halt_requested:
            self.halt_requested = True
            self.node.spawn(self._halt(), "low-battery halt")
        elif event.level == "node_lvd" and not action.halt:
            log.warning("battery at the node LVD and %s: staying up idle", action.why)

    async def _halt(self) -> None:
        if self.config.wake == "rtc":
            alarm = Path(self.config.rtc_wakealarm_path)
            try:
                alarm.write_text("0\n")  # clear, then set: the kernel refuses a second alarm
                alarm.write_text(f"+{int(self.config.rtc_wake_after_s)}\n")
            except OSError as exc:
                log.error("cannot set the RTC wake alarm (%s): not halting", exc)
                self.halt_requested = False
                return
        log.warning("halting the Pi in %.0f s (battery at the node LVD; wake by %s)",
                    self.config.halt_delay_s, self.config.wake)
        await asyncio.sleep(self.config.halt_delay_s)
        process = await asyncio.create_subprocess_exec(*self.config.halt_command)
        code = await process.wait()
        if code != 0:
            log.error("halt command %s failed (exit %d): staying up idle", self.config.halt_command, code)
            self.halt_requested = False
