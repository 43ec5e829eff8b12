"""``[gpio]``: the backend and the pins of the printer's relay, the status LED and the inputs
(plate button, runout and door switches).  BCM numbering; every key is in config/node.example.toml."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from node.section import Section


class OutputPin(Section):
    """A digital output: BCM pin number and whether the device switches on at a low level."""

    pin: int = Field(ge=0, le=53)
    active_low: bool = False


class InputPin(Section):
    """A digital input: BCM pin, pull resistor, and the level that means "active" (pressed, runout, open)."""

    pin: int = Field(ge=0, le=53)
    pull: Literal["up", "down", "off"] = "up"
    active_low: bool = Field(True, description="active when the pin reads 0 (a switch to ground with pull-up)")
    debounce_s: float = Field(0.05, ge=0, le=5)


class GpioSection(Section):
    backend: Literal["simulated", "rpi"] = Field(
        "simulated", description="'rpi' = RPi.GPIO API (rpi-lgpio on a Pi 5); 'simulated' off-Pi")
    poll_interval_s: float = Field(0.02, gt=0, le=1, description="input sampling period for debouncing")
    relay: OutputPin | None = Field(None, description="printer power relay; None = printer powered permanently")
    relay_off_below_c: float = Field(50.0, ge=20, le=120, description="idle printer is switched off only below this hotend temperature")
    relay_idle_off_s: float = Field(300.0, ge=0, description="real seconds idle (and cool) before the relay opens")
    relay_on_timeout_s: float = Field(60.0, gt=0, description="real seconds for the printer to connect after power on")
    led: OutputPin | None = Field(None, description="status LED")
    plate_button: InputPin | None = Field(None, description="'plate cleared' push button")
    runout_sensor: InputPin | None = Field(None, description="filament runout switch: pauses the print")
    door_sensor: InputPin | None = Field(None, description="enclosure door switch: pauses the print when opened")
