"""``[telemetry]``: which power source the daemon reads, how often, and what is plausible.

pvlib-free (the daemon imports it).  The battery bank is ``[battery]``
(:mod:`node.power.battery`), the site ``[site]`` (:mod:`node.power.site`).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SourceName = Literal["simulated", "vedirect", "epever", "renogy", "ina219", "ina226"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PvArraySection(_Strict):
    """The simulated PV array (PVWatts-style DC model: Dobos, NREL/TP-6A20-62641, 2014)."""

    peak_w: float = Field(400.0, gt=0, le=100_000, description="DC nameplate at 1000 W/m2, 25 C")
    tilt_deg: float = Field(30.0, ge=0, le=90)
    azimuth_deg: float = Field(180.0, ge=0, lt=360, description="180 = facing south")
    temperature_coeff_per_k: float = Field(-0.0037, ge=-0.01, le=0)
    losses_fraction: float = Field(0.14, ge=0, lt=1, description="soiling, wiring, mismatch, MPPT")
    mpp_v: float = Field(37.0, gt=0, description="array MPP voltage at STC (two 18.5 V panels in series)")


class SimulatedControllerSection(_Strict):
    """The simulated charge controller process (``source = "simulated"``)."""

    array: PvArraySection = PvArraySection()
    initial_soc: float = Field(0.8, ge=0, le=1)
    node_load_w: float = Field(5.0, ge=0, description="the Pi and friends, always on")
    weather_seed: int | None = Field(None, description="None: clear sky every day; else seeded daily clearness")
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
    simulated: SimulatedControllerSection = SimulatedControllerSection()
