"""Buttons and sensors on GPIO: the plate-cleared button, filament runout, the enclosure door.

Inputs are sampled every ``gpio.poll_interval_s`` and debounced (a level must
hold ``debounce_s`` before it counts: contacts bounce for a few ms, and a
runout switch flickers as the filament wobbles).  Then:

* plate button pressed -> ``JobRunner.set_plate_clear(True, source="button")``
  (the runner sends ``plate_cleared``);
* runout active / door opened while printing -> ``JobRunner.pause`` with
  ``PauseReason.RUNOUT`` / ``DOOR``;
* both also hold a job from *starting* (a start gate): no print with the
  door open or without filament.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from node.hw.config import GpioSection, InputPin
from node.hw.gpio import Gpio
from node.jobs import Job, PauseReason, TransitionRefused
from node.node import Component, Node
from node.runner import GateDecision, JobRunner

log = logging.getLogger(__name__)


@dataclass
class Debouncer:
    """A level counts once it has held ``debounce_s``; ``update`` returns the new stable state on a change."""

    debounce_s: float
    stable: bool = False
    _candidate: bool = False
    _since_s: float = 0.0
    _primed: bool = field(default=False, repr=False)

    def update(self, active: bool, now_s: float) -> bool | None:
        if not self._primed:  # the level at start is the stable state, not an edge
            self._primed, self.stable, self._candidate, self._since_s = True, active, active, now_s
            return None
        if active != self._candidate:
            self._candidate, self._since_s = active, now_s
        if self._candidate != self.stable and now_s - self._since_s >= self.debounce_s:
            self.stable = self._candidate
            return self.stable
        return None


class GpioInputs(Component):
    name = "gpio_inputs"
    section = "gpio"

    def __init__(self, node: Node, config: GpioSection, gpio: Gpio, runner: JobRunner) -> None:
        super().__init__(node, config)
        self._task: asyncio.Task[None] | None = None
        self.config: GpioSection = config
        self.gpio = gpio
        self.runner = runner
        self.inputs: dict[str, InputPin] = {
            name: pin for name, pin in (("plate_button", config.plate_button), ("runout", config.runout_sensor),
                                        ("door", config.door_sensor)) if pin is not None}
        self.debouncers = {name: Debouncer(pin.debounce_s) for name, pin in self.inputs.items()}
        self.presses = 0

    async def start(self) -> None:
        backend = self.gpio.backend
        for pin in self.inputs.values():
            backend.setup_input(pin.pin, pin.pull)
        if "runout" in self.inputs or "door" in self.inputs:
            self.runner.add_start_gate("sensors", self.gate, order=30)
        self._task = self.node.spawn(self._poll(), "gpio-inputs")

    async def stop(self) -> None:
        if self._task is not None:  # before the gpio component closes the backend
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {name: d.stable for name, d in self.debouncers.items()} | {"button_presses": self.presses}

    def active(self, name: str) -> bool:
        debouncer = self.debouncers.get(name)
        return bool(debouncer and debouncer.stable)

    async def gate(self, job: Job) -> GateDecision:
        if self.active("runout"):
            return GateDecision(False, "filament runout sensor active: load filament")
        if self.active("door"):
            return GateDecision(False, "enclosure door open")
        return GateDecision(True)

    def sample(self, now_s: float) -> list[tuple[str, bool]]:
        """Read every input once; return the debounced changes."""
        backend = self.gpio.backend
        changes = []
        for name, pin in self.inputs.items():
            level = backend.read(pin.pin)
            active = (level == 0) if pin.active_low else (level == 1)
            changed = self.debouncers[name].update(active, now_s)
            if changed is not None:
                changes.append((name, changed))
        return changes

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for name, active in self.sample(loop.time()):
                try:
                    await self._act(name, active)
                except Exception:
                    log.exception("input %s: acting on the change failed", name)
            await asyncio.sleep(self.config.poll_interval_s)

    async def _act(self, name: str, active: bool) -> None:
        if name == "plate_button":
            if active:
                self.presses += 1
                log.info("plate-cleared button pressed")
                await self.runner.set_plate_clear(True, source="button")
            return
        if not active:
            log.info("%s sensor back to normal", name)
            self.runner.wake()
            return
        reason = PauseReason.RUNOUT if name == "runout" else PauseReason.DOOR
        job_id = self.runner.current_job_id
        log.warning("%s sensor active%s", name, f": pausing job {job_id}" if job_id else "")
        if job_id is not None:
            try:
                await self.runner.pause(job_id, reason)
            except TransitionRefused as exc:  # already paused, or between jobs
                log.info("not pausing: %s", exc)
