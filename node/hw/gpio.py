"""The narrow GPIO interface, a simulated backend, and the RPi.GPIO backend (imported lazily).

The interface is five calls (outputs with an initial level, inputs with a
pull, read, write, close) so the simulated backend is exact and the real one
is thin.  The RPi.GPIO API is provided by the RPi.GPIO package on Pi 1-4 and by
rpi-lgpio (same module name, on top of lgpio) on a Pi 5
(https://rpi-lgpio.readthedocs.io/).  Pins are BCM numbers.

Levels are physical (0 = low, 1 = high); devices translate "on"/"active"
through their ``active_low`` flag, so an active-low relay module is one
config flag, not a code path.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Literal, Protocol

from node.hw.config import GpioSection
from node.node import Component, Node

log = logging.getLogger(__name__)

Pull = Literal["up", "down", "off"]


class GpioError(RuntimeError):
    """A pin could not be set up or used (wrong pin, no permission, not a Pi)."""


class GpioBackend(Protocol):
    def setup_output(self, pin: int, level: int) -> None: ...
    def setup_input(self, pin: int, pull: Pull) -> None: ...
    def read(self, pin: int) -> int: ...
    def write(self, pin: int, level: int) -> None: ...
    def close(self) -> None: ...


class SimulatedGpio:
    """Pins in memory.  Tests (or a simulation) drive inputs with :meth:`set_input` and can
    react to outputs with :meth:`on_output` (e.g. "the relay closed: plug the printer in")."""

    def __init__(self) -> None:
        self.levels: dict[int, int] = {}
        self.modes: dict[int, str] = {}
        self.writes: list[tuple[int, int]] = []
        self._listeners: dict[int, list[Callable[[int], None]]] = {}
        self._lock = threading.Lock()

    def setup_output(self, pin: int, level: int) -> None:
        self._claim(pin, "out")
        self._set(pin, level)

    def setup_input(self, pin: int, pull: Pull) -> None:
        self._claim(pin, "in")
        with self._lock:
            self.levels.setdefault(pin, 0 if pull == "down" else 1)

    def read(self, pin: int) -> int:
        if pin not in self.modes:
            raise GpioError(f"GPIO{pin} is not set up")
        return self.levels[pin]

    def write(self, pin: int, level: int) -> None:
        if self.modes.get(pin) != "out":
            raise GpioError(f"GPIO{pin} is not an output")
        self._set(pin, level)

    def close(self) -> None:
        self.modes.clear()

    # --- the simulation's side ------------------------------------------------------------
    def set_input(self, pin: int, level: int) -> None:
        with self._lock:
            self.levels[pin] = 1 if level else 0

    def on_output(self, pin: int, listener: Callable[[int], None]) -> None:
        self._listeners.setdefault(pin, []).append(listener)

    def _claim(self, pin: int, mode: str) -> None:
        if not 0 <= pin <= 53:
            raise GpioError(f"GPIO{pin}: no such BCM pin")
        if pin in self.modes:
            raise GpioError(f"GPIO{pin} is already used as an {self.modes[pin]}put")
        self.modes[pin] = mode

    def _set(self, pin: int, level: int) -> None:
        level = 1 if level else 0
        with self._lock:
            changed = self.levels.get(pin) != level
            self.levels[pin] = level
            self.writes.append((pin, level))
        if changed:
            for listener in self._listeners.get(pin, []):
                listener(level)


class RpiGpio:
    """The RPi.GPIO API (RPi.GPIO, or rpi-lgpio on a Pi 5). Imported here, only when chosen."""

    def __init__(self) -> None:
        try:
            import RPi.GPIO as GPIO  # type: ignore[import-not-found]
        except ImportError as exc:
            raise GpioError("gpio.backend = 'rpi' needs the RPi.GPIO API: pip install 'printnode[pi]' "
                            f"(Pi 1-4) or 'printnode[pi5]' (rpi-lgpio, Pi 5) ({exc})") from None
        except RuntimeError as exc:  # RPi.GPIO raises this off-Pi or without /dev/gpiomem access
            raise GpioError(f"RPi.GPIO cannot run here: {exc} (is the user in the gpio group?)") from None
        self.GPIO = GPIO
        GPIO.setwarnings(False)
        GPIO.setmode(GPIO.BCM)
        self._pins: set[int] = set()

    def setup_output(self, pin: int, level: int) -> None:
        # initial= sets the level before the pin becomes an output: no glitch on an active-low relay
        self._guard(lambda: self.GPIO.setup(pin, self.GPIO.OUT, initial=self.GPIO.HIGH if level else self.GPIO.LOW), pin)
        self._pins.add(pin)

    def setup_input(self, pin: int, pull: Pull) -> None:
        pud = {"up": self.GPIO.PUD_UP, "down": self.GPIO.PUD_DOWN, "off": self.GPIO.PUD_OFF}[pull]
        self._guard(lambda: self.GPIO.setup(pin, self.GPIO.IN, pull_up_down=pud), pin)
        self._pins.add(pin)

    def read(self, pin: int) -> int:
        return 1 if self._guard(lambda: self.GPIO.input(pin), pin) else 0

    def write(self, pin: int, level: int) -> None:
        self._guard(lambda: self.GPIO.output(pin, self.GPIO.HIGH if level else self.GPIO.LOW), pin)

    def close(self) -> None:
        # No GPIO.cleanup(): it would turn the relay pin into an input and let the module's own
        # pull decide.  A restarting daemon must not power-cycle the printer; at halt the Pi
        # resets every pin and the wiring (docs/field.md) keeps the printer off.
        self._pins.clear()

    @staticmethod
    def _guard(call: Callable[[], Any], pin: int) -> Any:
        try:
            return call()
        except (RuntimeError, ValueError, OSError) as exc:
            raise GpioError(f"GPIO{pin}: {exc}") from None


def open_backend(config: GpioSection) -> GpioBackend:
    if config.backend == "rpi":
        return RpiGpio()
    return SimulatedGpio()


class Gpio(Component):
    """Owns the backend: opened at start (devices start after it), closed at stop."""

    name = "gpio"
    section = "gpio"

    def __init__(self, node: Node, config: GpioSection, backend: GpioBackend | None = None) -> None:
        super().__init__(node, config)
        self.config: GpioSection = config
        self._backend = backend

    @property
    def backend(self) -> GpioBackend:
        if self._backend is None:
            raise GpioError("the GPIO backend is not open yet (the gpio component starts first)")
        return self._backend

    async def start(self) -> None:
        if self._backend is None:
            self._backend = open_backend(self.config)
        log.info("GPIO backend: %s", type(self._backend).__name__)

    async def stop(self) -> None:
        if self._backend is not None:
            self._backend.close()

    def status(self) -> dict[str, Any]:
        backend = self._backend
        levels = dict(backend.levels) if isinstance(backend, SimulatedGpio) else None
        return {"backend": self.config.backend, "levels": levels}
