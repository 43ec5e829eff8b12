"""GPIO devices: pure policies, the simulated backend, and the whole chain in a real node.

The node test wires the simulated relay to a virtual printer on a real pty:
closing the relay "plugs in" a freshly booted printer behind a stable
by-id-style name, opening it pulls the plug, as on the bench.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from node.clock import Clock
from node.config import NodeConfig
from node.daemon import make_runner
from node.events import PrinterState
from node.hw.config import GpioSection, InputPin, OutputPin
from node.hw.gpio import Gpio, GpioError, RpiGpio, SimulatedGpio
from node.hw.inputs import Debouncer, GpioInputs
from node.hw.led import PATTERNS, LedInputs, StatusLed, choose_pattern
from node.hw.relay import PowerInputs, PrinterPower, idle_off_reason, is_fatal_printer_error
from node.jobs import Jobs, JobState
from node.node import Node
from node.printer.printer import Printer
from node.store import Store
from tests.conftest import moves_gcode


@pytest.mark.parametrize("inputs, expected", [
    (PowerInputs(busy=True, hotend_c=25, idle_for_s=1e6), None),
    (PowerInputs(busy=False, hotend_c=50.0, idle_for_s=1e6), None),       # not below 50 °C
    (PowerInputs(busy=False, hotend_c=49.9, idle_for_s=299), None),       # not idle long enough
    (PowerInputs(busy=False, hotend_c=49.9, idle_for_s=300), "idle 300 s, hotend 50 °C"),
    (PowerInputs(busy=False, hotend_c=None, idle_for_s=400), "idle 400 s, no temperature reading"),
])
def test_idle_printer_goes_off_only_when_cool_and_idle(inputs: PowerInputs, expected: str | None) -> None:
    assert idle_off_reason(inputs, off_below_c=50.0, idle_off_s=300.0) == expected


def test_only_firmware_errors_are_fatal() -> None:
    assert is_fatal_printer_error(PrinterState(state="error", detail="printer reported: Error:Thermal Runaway"))
    assert not is_fatal_printer_error(PrinterState(state="error", detail="the printer reset (start)"))
    assert not is_fatal_printer_error(PrinterState(state="disconnected", detail="printer reported: x"))


def test_led_patterns_are_distinct_and_prioritised() -> None:
    assert len({PATTERNS[p] for p in PATTERNS}) == 6
    base = LedInputs(printer_state="ready", printer_expected=True, printing=False, paused=False,
                     waiting_energy=False, failed_unacknowledged=False)
    assert choose_pattern(base) == "idle"
    assert choose_pattern(base.__class__(**{**base.__dict__, "printer_state": "disconnected"})) == "offline"
    off = base.__class__(**{**base.__dict__, "printer_state": "disconnected", "printer_expected": False})
    assert choose_pattern(off) == "idle", "a printer we switched off is not offline"
    everything = base.__class__(**{**base.__dict__, "printing": True, "paused": True, "waiting_energy": True,
                                   "failed_unacknowledged": True})
    order = []
    for flag in ("failed_unacknowledged", "paused", "printing", "waiting_energy"):
        order.append(choose_pattern(everything))
        everything = everything.__class__(**{**everything.__dict__, flag: False})
    assert order == ["error", "paused", "printing", "waiting_sun"]


def test_debouncer_ignores_bounces_and_reports_each_edge_once() -> None:
    d = Debouncer(debounce_s=0.05)
    assert d.update(False, 0.0) is None
    # a press that bounces for 20 ms, then holds
    changes = [d.update(level, t) for level, t in [(True, 0.10), (False, 0.11), (True, 0.12), (False, 0.125),
                                                    (True, 0.13), (True, 0.17), (True, 0.19), (True, 0.30)]]
    assert [c for c in changes if c is not None] == [True]
    assert changes.index(True) == 6  # held 50 ms from the last bounce at 0.13
    assert [d.update(False, t) for t in (0.4, 0.42, 0.46)] == [None, None, False]


def test_simulated_backend_levels_and_errors() -> None:
    gpio = SimulatedGpio()
    seen = []
    gpio.on_output(17, seen.append)
    gpio.setup_output(17, 1)
    gpio.write(17, 0)
    gpio.write(17, 0)
    assert seen == [1, 0] and gpio.read(17) == 0
    with pytest.raises(GpioError, match="already used"):
        gpio.setup_input(17, "up")
    with pytest.raises(GpioError, match="not an output"):
        gpio.write(5, 1)
    with pytest.raises(GpioError, match="no such BCM pin"):
        gpio.setup_output(99, 0)
    gpio.setup_input(22, "up")
    assert gpio.read(22) == 1  # pull-up: idle high


def test_rpi_backend_without_the_library_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "RPi", None)  # as on a machine without RPi.GPIO / rpi-lgpio
    with pytest.raises(GpioError, match=r"printnode\[pi5\]"):
        RpiGpio()


class PluggablePrinter:
    """A virtual printer (its own process, like a board on USB) that exists only while the relay is closed."""

    def __init__(self, link: Path, active_low: bool, command_log: Path | None = None) -> None:
        self.link = link
        self.active_low = active_low
        self.command_log = command_log
        self.process: subprocess.Popen[bytes] | None = None
        self.boots = 0

    def on_relay(self, level: int) -> None:
        powered = bool(level) != self.active_low
        if powered and self.process is None:
            self.boots += 1
            port_file = self.link.with_name(f"boot{self.boots}.port")
            log = ["--command-log", str(self.command_log)] if self.command_log else []
            self.process = subprocess.Popen([sys.executable, "-m", "node", "virtual-printer", "--time-scale", "100",
                                             "--port-file", str(port_file), *log], stdin=subprocess.DEVNULL)
            threading.Thread(target=self._plug_when_booted, args=(port_file,), daemon=True).start()
        elif not powered and self.process is not None:
            self.link.unlink(missing_ok=True)
            self.unplug()

    def _plug_when_booted(self, port_file: Path) -> None:
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                tmp = self.link.with_suffix(".new")
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(port_file.read_text().strip())
                tmp.replace(self.link)  # udev's /dev/serial/by-id link appears
                return
            time.sleep(0.05)

    def unplug(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


async def wait_until(predicate, timeout_s: float = 30.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_relay_button_runout_and_led_in_a_real_node(tmp_path: Path) -> None:
    asyncio.run(_node_scenario(tmp_path))


async def _node_scenario(tmp_path: Path) -> None:
    link = tmp_path / "usb-printer-if00"
    gpio_config = GpioSection(relay=OutputPin(pin=17, active_low=True), led=OutputPin(pin=27),
                              plate_button=InputPin(pin=22, debounce_s=0.03),
                              runout_sensor=InputPin(pin=23, pull="down", active_low=False, debounce_s=0.03),
                              relay_idle_off_s=0.5, relay_on_timeout_s=30)
    config = NodeConfig.model_validate({
        "node": {"state_dir": str(tmp_path / "state")},
        "printer": {"port": str(link), "connect_timeout_s": 5},
        "jobs": {"queue_sample_when_empty": False},
        "gpio": gpio_config.model_dump()})
    backend = SimulatedGpio()
    printer_hw = PluggablePrinter(link, active_low=True)
    backend.on_output(17, printer_hw.on_relay)
    store = Store(tmp_path / "state" / "printnode.sqlite3").open()
    node = Node(config.node, Clock(100.0))
    jobs = node.add(Jobs(node, store))
    printer = node.add(Printer(node, config.printer, store))
    runner = node.add(make_runner(node, config, store, jobs, printer, recheck_s=0.5))
    gpio = node.add(Gpio(node, config.gpio, backend))
    inputs = node.add(GpioInputs(node, config.gpio, gpio, runner))
    power = node.add(PrinterPower(node, config.gpio, gpio, runner, printer))  # the last start gate
    led = node.add(StatusLed(node, config.gpio, gpio, power))
    plate_sources = []
    node.register_event_handler("plate_cleared", lambda e: plate_sources.append(e.source))
    await node.start()
    try:
        assert backend.read(17) == 1 and not power.on, "active-low relay: high = printer off at start"
        assert printer_hw.boots == 0
        short = moves_gcode(tmp_path / "short.gcode", 20)
        first = await runner.queue_file("short", short, "a" * 64, short.stat().st_size)
        # the relay's start gate powers the printer, the worker reconnects by itself, the job prints
        await wait_until(lambda: power.on and backend.read(17) == 0, what="relay on")
        done = await wait_until(lambda: _state_is(jobs, first.id, JobState.COMPLETED), timeout_s=60, what="completed")
        assert done and printer_hw.boots == 1
        # idle and cool (the virtual hotend never heated): the relay opens, the printer goes away
        await wait_until(lambda: not power.on, what="relay off when idle and cool")
        assert backend.read(17) == 1 and "idle" in power.reason and printer_hw.process is None
        await wait_until(lambda: led.pattern == "idle", what="LED idle, not offline: the printer is off on purpose")
        # the next job waits for the plate; the button confirms it
        long = moves_gcode(tmp_path / "long.gcode", 3000)
        second = await runner.queue_file("long", long, "b" * 64, long.stat().st_size)
        await wait_until(lambda: _state_is(jobs, second.id, JobState.WAITING_PLATE), what="waiting for plate")
        assert not power.on, "no power for a job that cannot start"
        backend.set_input(22, 0)  # pressed (to ground, pull-up)
        await asyncio.sleep(0.2)
        backend.set_input(22, 1)
        await wait_until(lambda: plate_sources == ["button"], what="plate_cleared from the button")
        await wait_until(lambda: _state_is(jobs, second.id, JobState.PRINTING), timeout_s=30, what="second printing")
        assert power.on and printer_hw.boots == 2
        await wait_until(lambda: led.pattern == "printing", what="LED printing")
        # filament runs out: the print pauses with reason runout, the LED says paused, power stays on
        backend.set_input(23, 1)
        paused = await wait_until(lambda: _state_is(jobs, second.id, JobState.PAUSED), what="paused by runout")
        assert paused.pause_reason == "runout"
        await wait_until(lambda: led.pattern == "paused", what="LED paused")
        await asyncio.sleep(0.7)
        assert power.on, "a paused job keeps the printer powered"
        await runner.cancel(second.id)
        # runout still active: a new job is held by the sensors gate and the printer stays off
        third = await runner.queue_file("third", short, "a" * 64, short.stat().st_size)
        await runner.set_plate_clear(True)
        await wait_until(lambda: not power.on, what="relay off after cancel")
        held = await wait_until(lambda: _state_is(jobs, third.id, JobState.WAITING_ENERGY), what="held by sensor")
        assert "runout" in held.reason
        assert inputs.status()["runout"] is True
    finally:
        await node.stop()
        store.close()
        printer_hw.unplug()


async def _state_is(jobs: Jobs, job_id: str, state: JobState):
    job = await jobs.get(job_id)
    return job if job is not None and job.state == state else None


def test_relay_gate_accepts_a_printer_whose_port_never_went_away(virtual_port, tmp_path: Path) -> None:
    """A USB back-powered board (or the virtual printer) keeps its port: live temperatures count as ready."""
    async def scenario() -> None:
        config = NodeConfig.model_validate({
            "node": {"state_dir": str(tmp_path / "state")},
            "printer": {"port": virtual_port.path},
            "jobs": {"queue_sample_when_empty": False},
            "gpio": {"relay": {"pin": 5}, "relay_idle_off_s": 3600}})
        store = Store(tmp_path / "state" / "printnode.sqlite3").open()
        node = Node(config.node, Clock(100.0))
        jobs = node.add(Jobs(node, store))
        printer = node.add(Printer(node, config.printer, store))
        runner = node.add(make_runner(node, config, store, jobs, printer, recheck_s=0.5))
        gpio = node.add(Gpio(node, config.gpio, SimulatedGpio()))
        power = node.add(PrinterPower(node, config.gpio, gpio, runner, printer))
        await node.start()
        try:
            await wait_until(lambda: printer.ready, what="printer ready before any power on")
            short = moves_gcode(tmp_path / "short.gcode", 5)
            job = await runner.queue_file("short", short, "c" * 64, short.stat().st_size)
            await wait_until(lambda: _state_is(jobs, job.id, JobState.COMPLETED), timeout_s=30, what="completed")
            assert power.on and gpio.backend.read(5) == 1  # active-high module: high = on
            assert power.switch_count == 1
        finally:
            await node.stop()
            store.close()
    asyncio.run(scenario())
