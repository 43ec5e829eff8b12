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

Pure decisions (:func:`decide`) are kept apart from the I/O so they are tested
without a battery.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from node.events import BatteryLevelChanged
from node.jobs import Job, JobState, PauseReason
from node.node import Component, Node
from node.power.settings import LowBatterySection

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


class PowerGuard(Component):
    name = "power_guard"

    def __init__(self, node: Node, config: LowBatterySection, runner: Any) -> None:
        super().__init__(node, config)
        self.config: LowBatterySection = config
        self.runner = runner
        self.level: Level = "ok"
        self.last_action: GuardAction | None = None
        self.halt_requested = False
        self.holding = False  # starts refused since a critical level, until ``ok``

    async def start(self) -> None:
        self.node.register_event_handler("battery_level_changed", self._on_level)
        self.runner.add_start_gate("battery", self._gate)

    def status(self) -> dict[str, Any]:
        return {"level": self.level, "holding_starts": self.holding,
                "wake": self.config.wake, "halt_requested": self.halt_requested,
                "last_action": None if self.last_action is None else self.last_action.why}

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
            if job is not None and job.state == JobState.PAUSED and job.pause_reason == PauseReason.LOW_BATTERY:
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
