"""Status LED: one LED, six patterns a person can tell apart across a workshop.

| pattern       | looks like                          | when |
|---------------|-------------------------------------|------|
| error         | fast flicker (0.1 s on / 0.1 s off) | printer error, or the last job failed (until the next start or plate cleared) |
| paused        | double blink, then dark             | a job is paused (any reason) or suspended |
| printing      | steady on                           | a job is printing |
| waiting_sun   | slow blink (1 s on / 1 s off)       | a job waits for energy (the planner's gate) |
| offline       | long on, short off (1.5 / 0.5 s)    | the printer should be reachable but is not (or sync reports offline) |
| idle          | short heartbeat every 3 s           | nothing to do |

The first matching row wins.  Blink timing is real time, not sim time: a
person watches it.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal

from node.events import JobStateChanged, PlateCleared, PrinterState, SyncLink
from node.hw.config import GpioSection
from node.hw.gpio import Gpio
from node.hw.relay import PrinterPower
from node.node import Component, Node, wait_until_set

log = logging.getLogger(__name__)

Pattern = Literal["error", "paused", "printing", "waiting_sun", "offline", "idle"]

#: (on_s, off_s) pairs, repeated
PATTERNS: dict[Pattern, tuple[tuple[float, float], ...]] = {
    "error": ((0.1, 0.1),),
    "paused": ((0.2, 0.2), (0.2, 1.4)),
    "printing": ((1.0, 0.0),),
    "waiting_sun": ((1.0, 1.0),),
    "offline": ((1.5, 0.5),),
    "idle": ((0.1, 2.9),),
}


@dataclass(frozen=True)
class LedInputs:
    printer_state: str
    printer_expected: bool       # powered (or no relay): a disconnected printer is a fault
    printing: bool
    paused: bool
    waiting_energy: bool
    failed_unacknowledged: bool
    sync_offline: bool = False


def choose_pattern(inputs: LedInputs) -> Pattern:
    if inputs.printer_state == "error" or inputs.failed_unacknowledged:
        return "error"
    if inputs.paused:
        return "paused"
    if inputs.printing:
        return "printing"
    if inputs.waiting_energy:
        return "waiting_sun"
    if (inputs.printer_expected and inputs.printer_state == "disconnected") or inputs.sync_offline:
        return "offline"
    return "idle"


class StatusLed(Component):
    name = "status_led"
    section = "gpio"

    def __init__(self, node: Node, config: GpioSection, gpio: Gpio, power: PrinterPower | None = None) -> None:
        super().__init__(node, config)
        self._task: asyncio.Task[None] | None = None
        assert config.led is not None, "StatusLed needs gpio.led"
        self.pin = config.led.pin
        self.active_low = config.led.active_low
        self.gpio = gpio
        self.power = power  # PrinterPower or None: a printer switched off is not "offline"
        self.pattern: Pattern = "idle"
        self.sync_offline = False
        self._printer_state = "disconnected"
        self._job_states: dict[str, str] = {}
        self._failed = False
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self.gpio.backend.setup_output(self.pin, self._level(False))
        self.node.register_event_handler("job_state_changed", self._on_job)
        self.node.register_event_handler("printer_state", self._on_printer)
        self.node.register_event_handler("plate_cleared", self._on_plate)
        self.node.register_event_handler("sync_link", self._on_sync_link)
        self._task = self.node.spawn(self._blink(), "status-led")

    async def stop(self) -> None:
        if self._task is not None:  # before the gpio component closes the backend
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "pin": self.pin}

    def set_sync_offline(self, offline: bool) -> None:
        """The hub is unreachable (the ``sync_link`` event, or a test)."""
        self.sync_offline = offline
        self._update()

    def _on_sync_link(self, event: SyncLink) -> None:
        self.set_sync_offline(not event.online)

    def inputs(self) -> LedInputs:
        states = set(self._job_states.values())
        expected = self.power is None or self.power.on
        return LedInputs(printer_state=self._printer_state, printer_expected=expected,
                         printing="printing" in states, paused=bool(states & {"paused", "suspended"}),
                         waiting_energy="waiting_energy" in states, failed_unacknowledged=self._failed,
                         sync_offline=self.sync_offline)

    def _update(self) -> None:
        pattern = choose_pattern(self.inputs())
        if pattern != self.pattern:
            log.debug("status LED: %s -> %s", self.pattern, pattern)
            self.pattern = pattern
            self._changed.set()

    async def _on_job(self, event: JobStateChanged) -> None:
        if event.to_state in ("printing", "paused", "suspended", "waiting_energy"):
            self._job_states[event.job_id] = event.to_state
        else:
            self._job_states.pop(event.job_id, None)
        if event.to_state == "failed":
            self._failed = True
        elif event.to_state == "printing":
            self._failed = False
        self._update()

    async def _on_printer(self, event: PrinterState) -> None:
        self._printer_state = event.state
        self._update()

    async def _on_plate(self, event: PlateCleared) -> None:
        self._failed = False  # someone looked at the printer
        self._update()

    def _level(self, on: bool) -> int:
        return int(on) ^ int(self.active_low)

    async def _blink(self) -> None:
        backend = self.gpio.backend
        while True:
            self._changed.clear()
            for on_s, off_s in PATTERNS[self.pattern]:
                backend.write(self.pin, self._level(True))
                if await self._wait_change(on_s):
                    break
                if off_s > 0:
                    backend.write(self.pin, self._level(False))
                    if await self._wait_change(off_s):
                        break

    async def _wait_change(self, seconds: float) -> bool:
        return await wait_until_set(self._changed, seconds)
