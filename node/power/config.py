"""Config sections of the power side: ``[telemetry]`` (which source, how often, what is plausible)
and ``[low_battery]`` (what the node does when the battery runs low: :mod:`node.power.power_guard`).

pvlib-free (the daemon imports it).  The battery bank is ``[battery]`` (:mod:`node.power.battery`),
the site ``[site]`` (:mod:`node.power.site`).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from node.section import Section

SourceName = Literal["simulated", "vedirect", "epever", "renogy", "ina219", "ina226"]


_Strict = Section


class CloudSpell(_Strict):
    """A cloud that the forecast does not know about, every simulated day: what makes a plan wrong."""

    start: str = Field(description="site-local start, 'HH:MM'")
    hours: float = Field(gt=0, le=24)
    clearness: float = Field(ge=0, le=1, description="share of the clear-sky irradiance that gets through")

    @field_validator("start")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        try:
            hours, minutes = (int(part) for part in value.split(":"))
        except ValueError:
            raise ValueError(f"{value!r} is not HH:MM") from None
        if not (0 <= hours < 24 and 0 <= minutes < 60):
            raise ValueError(f"{value!r} is not a time of day")
        return value

    @property
    def start_min(self) -> int:
        hours, minutes = (int(part) for part in self.start.split(":"))
        return hours * 60 + minutes


def cloud_clearness(local_min: float, spells: list[CloudSpell]) -> float:
    """The clearness at ``local_min`` minutes after local midnight: the darkest spell covering it."""
    factor = 1.0
    for spell in spells:
        if (local_min - spell.start_min) % 1440 < spell.hours * 60:
            factor = min(factor, spell.clearness)
    return factor


class SimulatedControllerSection(_Strict):
    """The simulated charge controller process (``source = "simulated"``); its PV array is ``[array]``."""

    initial_soc: float = Field(0.8, ge=0, le=1)
    node_load_w: float = Field(5.0, ge=0, description="the Pi and friends, always on")
    weather_seed: int | None = Field(None, description="None: clear sky every day; else seeded daily clearness")
    clouds: list[CloudSpell] = Field([], description="passing clouds every day, unknown to the forecast")
    ambient_c: float = Field(22.0, ge=-40, le=60, description="mean air temperature (cell temperature model)")


class InaSection(_Strict):
    """An INA219/INA226 shunt monitor on I2C."""

    chip: Literal["ina219", "ina226"] = "ina226"
    bus: int = Field(1, ge=0, description="/dev/i2c-N")
    address: int = Field(0x40, ge=0x03, le=0x77)
    shunt_ohm: float = Field(0.00075, gt=0, description="default: a 75 mV / 100 A external shunt")
    max_current_a: float = Field(100.0, gt=0)
    backend: Literal["auto", "smbus2", "simulated"] = Field(
        "auto", description="auto: smbus2 if /dev/i2c-N exists, else the simulated chip")


class TelemetrySection(_Strict):
    source: SourceName = "simulated"
    port: str | None = Field(None, description="serial device for vedirect / epever / renogy")
    baud: int | None = Field(None, gt=0, description="default: the device's (19200 VE.Direct, 115200 EPEVER, 9600 Renogy)")
    unit: int = Field(1, ge=1, le=247, description="Modbus slave address")
    ina: InaSection = InaSection()
    printer_shunt: InaSection | None = Field(None, description="a second shunt on the printer's feed: measured printer_w")
    read_timeout_s: float = Field(3.0, gt=0, description="real seconds without a reading before a retry counts")
    poll_interval_s: float = Field(1.0, gt=0, description="real seconds between polls of Modbus / I2C sources")
    stale_after_s: float = Field(10.0, gt=0, description="real seconds of silence before samples are marked stale")
    reopen_after_s: float = Field(30.0, gt=0, description="real seconds of silence before the port is reopened")
    retry_initial_s: float = Field(1.0, gt=0)
    retry_max_s: float = Field(60.0, gt=0)
    store: bool = Field(True, description="keep the downsampled history in the store")
    lost_hold_starts_after_s: float = Field(
        600.0, ge=0, description="node seconds since the last reading, once telemetry is lost, after which no "
                                 "new print starts (the SoC is too old to plan a print on)")
    lost_pause_after_s: float = Field(
        1800.0, ge=0, description="node seconds since the last reading, once telemetry is lost, after which the "
                                  "running print pauses at a safe point until telemetry returns")
    simulated: SimulatedControllerSection = SimulatedControllerSection()


class LowBatterySection(Section):
    """``[low_battery]``: what the node does when the battery runs low."""

    halt_at_node_lvd: bool = Field(True, description="power the Pi off at the node LVD, if a wake-up is certain")
    wake: Literal["none", "load_output", "rtc"] = Field(
        "none", description="what powers the Pi back on after a halt: 'load_output' (the controller's load "
                            "output feeds the Pi and reconnects by itself), 'rtc' (Pi 5 wake alarm), 'none'")
    rtc_wake_after_s: float = Field(3600.0, gt=60, description="with wake = 'rtc': wake up after this long")
    rtc_wakealarm_path: str = Field("/sys/class/rtc/rtc0/wakealarm", description="the RTC's wake alarm file")
    halt_command: list[str] = Field(["systemctl", "poweroff"], min_length=1,
                                    description="how to halt (logind via polkit; see systemd/printnode-halt.rules)")
    halt_delay_s: float = Field(30.0, ge=0, description="real seconds between the decision and the halt "
                                                       "(checkpoint written, logs flushed)")
