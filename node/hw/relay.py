"""Printer power relay: on before a print starts, off when the printer is not needed.

Policy (issue 8):
* **on** before a job starts: the relay registers the runner's *last* start
  gate; it closes the relay and waits (``relay_on_timeout_s``) until the
  printer has booted and the printer worker has reconnected by itself (a
  "ready" after power on), or — when the port never went away (a USB
  back-powered board, the virtual printer) — until the printer answered with
  a temperature report at least ``ALIVE_AFTER_S`` after power on;
* **off** only (a) when idle — no job printing or paused — for
  ``relay_idle_off_s`` *and* the hotend is below ``relay_off_below_c``
  (50 °C: a hot nozzle without its fan cooks the heat break), (b) at once when
  a job is suspended (low battery: the printer's draw is what must stop),
  (c) at once on a fatal error (a job failed, or the firmware reported an
  error such as a thermal runaway and halted).

Wiring: a normally-open contact, so the printer is off whenever the Pi
boots, halts or loses the pin (docs/field.md); most relay modules are
active-low (``active_low = true``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from node.events import JobStateChanged, PrinterState, Temperatures
from node.hw.config import GpioSection
from node.hw.gpio import Gpio
from node.jobs import Job
from node.node import Component, Node, wait_until_set
from node.printer.printer import Printer
from node.runner import GateDecision, JobRunner

log = logging.getLogger(__name__)

BUSY_STATES = frozenset({"printing", "paused"})
#: a temperature report this long after power on proves a link that never dropped is alive
ALIVE_AFTER_S = 3.0


@dataclass(frozen=True)
class PowerInputs:
    busy: bool                 # a job owns the printer (printing or paused)
    hotend_c: float | None     # last reading; None = never read since power on
    idle_for_s: float          # real seconds since the printer stopped being busy (or was switched on)


def idle_off_reason(inputs: PowerInputs, off_below_c: float, idle_off_s: float) -> str | None:
    """Why the idle printer may be switched off now, or None to keep it on."""
    if inputs.busy:
        return None
    if inputs.hotend_c is not None and inputs.hotend_c >= off_below_c:
        return None
    if inputs.idle_for_s < idle_off_s:
        return None
    temp = "no temperature reading" if inputs.hotend_c is None else f"hotend {inputs.hotend_c:.0f} °C"
    return f"idle {inputs.idle_for_s:.0f} s, {temp}"


def is_fatal_printer_error(event: PrinterState) -> bool:
    """A firmware error line (thermal runaway, MINTEMP, kill()): not a lost link or a reset."""
    return event.state == "error" and event.detail.startswith("printer reported")


class PrinterPower(Component):
    name = "printer_power"
    section = "gpio"

    def __init__(self, node: Node, config: GpioSection, gpio: Gpio, runner: JobRunner, printer: Printer) -> None:
        super().__init__(node, config)
        self._task: asyncio.Task[None] | None = None
        self.config: GpioSection = config
        assert config.relay is not None, "PrinterPower needs gpio.relay"
        self.pin = config.relay.pin
        self.active_low = config.relay.active_low
        self.gpio = gpio
        self.runner = runner
        self.printer = printer
        self.on = False
        self.reason = "not started"
        self.switch_count = 0
        self._busy_jobs: set[str] = set()
        self._starting_job: str | None = None  # passed (or in) the gate, not yet printing
        self._ready_since_power_on = False  # a "ready" heard after the relay last closed
        self._alive_since_power_on = False  # a temperature report heard well after the relay closed
        self._power_on_at = 0.0
        self._hotend_c: float | None = None
        self._idle_since = time.monotonic()
        self._check = asyncio.Event()

    # --- lifetime ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.gpio.backend.setup_output(self.pin, self._level(False))
        self.reason = "off at start"
        self.runner.add_start_gate("printer_power", self.gate, order=90)
        self.node.register_event_handler("job_state_changed", self._on_job)
        self.node.register_event_handler("temperatures", self._on_temperatures)
        self.node.register_event_handler("printer_state", self._on_printer_state)
        self._task = self.node.spawn(self._idle_loop(), "printer-power")

    async def stop(self) -> None:
        if self._task is not None:  # before the gpio component closes the backend
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {"on": self.on, "reason": self.reason, "pin": self.pin, "active_low": self.active_low,
                "switches": self.switch_count, "busy_jobs": sorted(self._busy_jobs),
                "starting_job": self._starting_job}

    # --- switching --------------------------------------------------------------------------
    def _level(self, on: bool) -> int:
        return int(on) ^ int(self.active_low)

    def switch(self, on: bool, reason: str) -> None:
        if on != self.on:
            self.gpio.backend.write(self.pin, self._level(on))
            self.switch_count += 1
            log.info("printer power %s: %s", "on" if on else "off", reason)
            self._hotend_c = None
            self._ready_since_power_on = False  # whatever the printer component last said is stale now
            self._alive_since_power_on = False
            self._power_on_at = time.monotonic()
            self._idle_since = time.monotonic()
        self.on = on
        self.reason = reason

    async def gate(self, job: Job) -> GateDecision:
        """The runner's last start gate: power the printer and wait until it is connected."""
        self._starting_job = job.id  # busy from here: the idle timer must not cut a starting job
        if not self.on:
            self.switch(True, f"job {job.id} is about to start")
        deadline = time.monotonic() + self.config.relay_on_timeout_s
        while not (self.printer.ready and (self._ready_since_power_on or self._alive_since_power_on)):
            if time.monotonic() > deadline:
                self._starting_job = None
                self._idle_since = time.monotonic()
                return GateDecision(False, f"printer did not connect within {self.config.relay_on_timeout_s:.0f} s "
                                           "of power on (cable, port, or the printer's own switch?)")
            await asyncio.sleep(0.2)
        self._idle_since = time.monotonic()
        return GateDecision(True)

    # --- what happens -----------------------------------------------------------------------
    async def _on_job(self, event: JobStateChanged) -> None:
        if event.job_id == self._starting_job:
            self._starting_job = None
        if event.to_state in BUSY_STATES:
            self._busy_jobs.add(event.job_id)
        else:
            if event.job_id in self._busy_jobs:
                self._idle_since = time.monotonic()
            self._busy_jobs.discard(event.job_id)
        if event.to_state == "suspended":
            self.switch(False, f"job {event.job_id} suspended: {event.reason}")
        elif event.to_state == "failed" and event.from_state in BUSY_STATES:
            self.switch(False, f"job {event.job_id} failed: {event.reason}")
        self._check.set()

    async def _on_temperatures(self, event: Temperatures) -> None:
        self._hotend_c = event.hotend_c
        if self.on and time.monotonic() - self._power_on_at >= ALIVE_AFTER_S:
            # the link never dropped (a USB back-powered board, or the virtual printer) but it answers
            self._alive_since_power_on = True
        self._check.set()

    async def _on_printer_state(self, event: PrinterState) -> None:
        if self.on and event.state == "ready":
            self._ready_since_power_on = True
        if is_fatal_printer_error(event):
            self.switch(False, f"printer error: {event.detail}")

    def evaluate(self) -> None:
        if not self.on:
            return
        inputs = PowerInputs(busy=bool(self._busy_jobs) or self._starting_job is not None, hotend_c=self._hotend_c,
                             idle_for_s=time.monotonic() - self._idle_since)
        reason = idle_off_reason(inputs, self.config.relay_off_below_c, self.config.relay_idle_off_s)
        if reason is not None:
            self.switch(False, reason)

    async def _idle_loop(self) -> None:
        while True:
            self._check.clear()
            self.evaluate()
            await wait_until_set(self._check, max(0.5, min(10.0, self.config.relay_idle_off_s / 4)))
