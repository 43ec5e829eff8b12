"""Config sections of the plant: ``[telemetry]`` (which source, how often, what is plausible),
``[low_battery]`` (what the node does when the battery runs low: :mod:`node.power.power_guard`),
``[battery]`` with ``[battery.thresholds]`` (the bank, the charger's setpoints, the SoC estimator's
settings: :mod:`node.power.battery`, :mod:`node.power.thresholds`), ``[site]`` (where the node
stands) and ``[array]`` (the PV array).

pvlib-free (the daemon imports it).  ``[site]``'s default is Tucson, Arizona — a sunny desert site
without daylight saving, so ``make run`` shows the sun doing something; the site can move (an RV):
every forecast request carries the site it is for.
"""
from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from node.power.plant import BatteryParams, Chemistry
from node.power.thresholds import Thresholds, resolve_thresholds
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


class SiteSection(Section):
    latitude: float = Field(32.2, ge=-90, le=90, description="degrees north")
    longitude: float = Field(-110.95, ge=-180, le=180, description="degrees east (west is negative)")
    altitude_m: float = Field(728.0, ge=-500, le=9000)
    timezone: str = Field("America/Phoenix", description="IANA zone: plan times people read; daily counters roll over at local midnight")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. 'Europe/Berlin', 'UTC')") from None
        return value


#: the SAPM cell-temperature parameter sets pvlib ships (pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"])
TemperatureModel = Literal["open_rack_glass_glass", "close_mount_glass_glass",
                           "open_rack_glass_polymer", "insulated_back_glass_polymer"]


class ArraySection(Section):
    """The PV array: orientation, size and losses (PVWatts DC model)."""

    tilt_deg: float = Field(30.0, ge=0, le=90, description="0 = flat (an RV roof), 90 = vertical")
    azimuth_deg: float = Field(180.0, ge=0, lt=360, description="compass bearing the panels face; 180 = south")
    peak_w: float = Field(400.0, gt=0, description="nameplate DC watts at STC (1000 W/m2, 25 C cell)")
    gamma_pdc_per_c: float = Field(-0.0037, ge=-0.01, le=0, description="power temperature coefficient")
    losses_pct: float = Field(14.0, ge=0, lt=100,
                              description="wiring, soiling, mismatch and MPPT charger losses together")
    temperature_model: TemperatureModel = "open_rack_glass_polymer"
    mpp_v: float = Field(37.0, gt=0, description="array MPP voltage at STC (two 18.5 V panels in series); "
                                                 "the simulated controller reports it as VPV")


class ThresholdsSection(Section):
    """``[battery.thresholds]``: any key left out takes the chemistry's default, scaled to the cell count."""

    reserve_soc_pct: float | None = Field(None, ge=0, le=100, description="planner keeps at least this")
    reserve_v: float | None = Field(None, gt=0, description="planner keeps the corrected voltage above this")
    critical_soc_pct: float | None = Field(None, ge=0, le=100, description="pause and power the printer off")
    critical_v: float | None = Field(None, gt=0)
    node_lvd_v: float | None = Field(None, gt=0, description="the node shuts down cleanly below this")
    node_reconnect_v: float | None = Field(None, gt=0, description="the node resumes above this")
    controller_lvd_v: float | None = Field(None, gt=0, description="the charge controller's own load disconnect")


# chemistry-dependent defaults (12 V banks; voltages scale with the cell count)
_CHEMISTRY_DEFAULTS: dict[str, dict[str, float]] = {
    "lifepo4": {"peukert_exponent": 1.05, "charge_efficiency": 0.98, "absorption_v": 14.2, "float_v": 13.5,
                "charged_v": 13.9, "acceptance_start_soc": 0.95},
    "lead_acid": {"peukert_exponent": 1.25, "charge_efficiency": 0.90, "absorption_v": 14.4, "float_v": 13.5,
                  "charged_v": 13.2, "acceptance_start_soc": 0.80},
}


_DEFAULT_CELLS = {"lifepo4": 4, "lead_acid": 6}


class BatterySection(Section):
    """``[battery]``: the bank, the charger's setpoints, the SoC estimator and the thresholds.

    Keys left unset take the chemistry's default (voltages scaled to ``cells``).
    Default bank: 4S LiFePO4, 12.8 V x 94 Ah = 1.2 kWh.
    """

    chemistry: Chemistry = "lifepo4"
    cells: int = Field(4, ge=1, le=32, description="cells in series (4 = 12 V LiFePO4, 6 = 12 V lead-acid)")
    capacity_ah: float = Field(94.0, gt=0, description="rated capacity at the 20-hour rate")
    internal_resistance_ohm: float = Field(0.02, ge=0, le=1, description="bank + wiring, for sag correction")
    peukert_exponent: float | None = Field(None, ge=1.0, le=1.6, description="default 1.05 LiFePO4, 1.25 lead-acid")
    charge_efficiency: float | None = Field(None, gt=0.5, le=1.0, description="coulombic; default 0.98 / 0.90")
    temperature_coeff_per_k: float = Field(0.005, ge=0, le=0.05, description="capacity loss per K below 25 C")
    max_charge_a: float = Field(50.0, gt=0, description="charger / battery current limit")
    absorption_v: float | None = Field(None, gt=0, description="charger absorption setpoint; default 14.2 / 14.4")
    float_v: float | None = Field(None, gt=0, description="charger float setpoint; default 13.5")
    charged_v: float | None = Field(None, gt=0, description="full when at least this ... default 13.9 / 13.2")
    tail_current_pct: float = Field(4.0, gt=0, le=20, description="... and current below this % of capacity ...")
    charged_dwell_s: float = Field(180.0, ge=0, description="... for this long")
    rest_current_pct: float = Field(1.0, gt=0, le=5, description="|I| below this % of capacity counts as rest")
    rest_min_s: float = Field(3 * 3600.0, ge=600, description="rest this long before trusting rest voltage")
    voltage_filter_s: float = Field(30.0, gt=0, description="time constant of the voltage filter")
    max_gap_s: float = Field(900.0, gt=0, description="longer gaps (sim s) between samples are not integrated")
    learn_offset: bool = Field(True, description="learn the current sensor's offset from resync drift")
    max_offset_a: float = Field(0.5, ge=0, description="bound on the learned offset")
    float_current_is_offset: bool | None = Field(
        None, description="learn the offset from the current while the charger floats a full bank; "
                          "default True for LiFePO4 (no float current), False for lead-acid (real float current)")
    thresholds: ThresholdsSection = ThresholdsSection()

    def _default(self, key: str) -> float:
        value = _CHEMISTRY_DEFAULTS[self.chemistry][key]
        if key.endswith("_v"):
            value = round(value * self.cells / _DEFAULT_CELLS[self.chemistry], 3)
        return value

    def value(self, key: str) -> float:
        given = getattr(self, key)
        return given if given is not None else self._default(key)

    def resolved_thresholds(self) -> Thresholds:
        return resolve_thresholds(self.thresholds, self.chemistry, self.cells)

    @model_validator(mode="after")
    def _check(self) -> BatterySection:
        self.resolved_thresholds()  # raises naming the keys out of order
        if not self.value("absorption_v") > self.value("float_v"):
            raise ValueError("absorption_v must be above float_v")
        if not self.value("charged_v") > self.resolved_thresholds().reserve_v:
            raise ValueError("charged_v must be above thresholds.reserve_v")
        return self

    def plant_params(self) -> BatteryParams:
        """The same bank as :mod:`node.power.plant` models it (simulated controller, planner)."""
        return BatteryParams(
            chemistry=self.chemistry, cells=self.cells, capacity_ah=self.capacity_ah,
            internal_resistance_ohm=self.internal_resistance_ohm,
            charge_efficiency=self.value("charge_efficiency"), peukert_exponent=self.value("peukert_exponent"),
            max_charge_a=self.max_charge_a, temperature_coeff_per_k=self.temperature_coeff_per_k,
            absorption_v=self.value("absorption_v"), float_v=self.value("float_v"),
            acceptance_start_soc=_CHEMISTRY_DEFAULTS[self.chemistry]["acceptance_start_soc"])
