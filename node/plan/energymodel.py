"""The energy simulation: the plant model of ``node/power/plant.py`` plus the loads on the battery.

Two views of one physics:

* :class:`EnergyModel` — the planner's fast view: the battery as an energy
  bucket in watt-hours, with the plant's parameters folded in (capacity at the
  mid-SoC open-circuit voltage, coulombic charge efficiency, the Peukert
  derating at a typical print draw, the charger's current limit, sunshine lost
  when full).  The inner loop lives in the Cython core ``ext/plancore.pyx`` and
  uses exactly these numbers.
* :class:`PlantSim` — the "truth" of a simulation: it advances
  :func:`node.power.plant.step_battery` itself, step by step, and books the
  sunshine used and lost.

Loads (:class:`LoadModel`): the node's own base load (a Raspberry Pi and the
charge controller), optional other loads on the same battery as a daily profile
(an RV's fridge), and the printer's draw in each of its power states — printing
(the job's energy profile), paused with the bed kept warm, standby (powered,
idle) and off.  Standby and the power supply's own idle draw matter over a long
pause: an idle Ender-3 on a 24 V supply draws 7 W, 170 Wh over a day.

Thresholds are ordered: ``cutoff < low_battery < reserve``.  Below
``low_battery`` the printer is switched off whatever the policy says; the
planning ``reserve`` is what the scheduler plans above and what a "brownout"
in the simulation's report means crossing with the printer on.
"""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from node.power.plant import BatteryParams, BatteryState, PlantStep, open_circuit_v, step_battery
from node.printer.profile import PrinterProfile


class EnergyThresholds(BaseModel):
    """State-of-charge thresholds, in percent, lowest first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cutoff_pct: float = Field(10.0, ge=0, le=100, description="the node itself sheds load below this")
    low_battery_pct: float = Field(20.0, ge=0, le=100, description="printer forced off below this")
    reserve_pct: float = Field(30.0, ge=0, le=100, description="planning reserve: no print is planned across it")

    @model_validator(mode="after")
    def _in_order(self) -> EnergyThresholds:
        if not self.cutoff_pct < self.low_battery_pct < self.reserve_pct:
            raise ValueError("thresholds must satisfy cutoff_pct < low_battery_pct < reserve_pct "
                             f"(got {self.cutoff_pct}, {self.low_battery_pct}, {self.reserve_pct})")
        return self


@dataclass(frozen=True)
class EnergyModel:
    """The battery as an energy bucket (Wh), derived from :class:`BatteryParams`.

    ``capacity_wh`` is the rated amp-hours at the open-circuit voltage at 50 %
    SoC (what the plant converts watts to amps with, to within ~2 % over the
    LiFePO4 plateau).  ``discharge_factor`` is the Peukert derating at a
    typical discharge power (the plant applies the same law per step).
    """

    capacity_wh: float
    charge_efficiency: float
    discharge_factor: float
    max_charge_w: float

    @classmethod
    def from_params(cls, params: BatteryParams, typical_discharge_w: float = 150.0) -> EnergyModel:
        v_mid = open_circuit_v(params.chemistry, 0.5, params.cells)
        typical_a = typical_discharge_w / v_mid
        return cls(
            capacity_wh=params.capacity_ah * v_mid,
            charge_efficiency=params.charge_efficiency,
            discharge_factor=params.usable_capacity_ah(typical_a) / params.capacity_ah,
            max_charge_w=params.max_charge_a * v_mid,
        )

    def step_wh(self, energy_wh: float, net_w: float, dt_s: float) -> tuple[float, float]:
        """One step of the bucket: (new energy, sunshine lost W).  Same rule as ``plancore``."""
        dt_h = dt_s / 3600.0
        if net_w >= 0:
            charge_w = min(net_w, self.max_charge_w)
            new_wh = energy_wh + charge_w * self.charge_efficiency * dt_h
            lost_w = net_w - charge_w
            if new_wh > self.capacity_wh:
                lost_w += (new_wh - self.capacity_wh) / (self.charge_efficiency * dt_h)
                new_wh = self.capacity_wh
            return new_wh, lost_w
        return max(0.0, energy_wh + net_w * dt_h / self.discharge_factor), 0.0


class LoadModel(BaseModel):
    """Everything on the battery except the printer's print profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_load_w: float = Field(4.0, ge=0, description="the node: Raspberry Pi 4 (~3 W) + charge controller")
    other_loads_w_by_hour: list[float] | None = Field(
        None, min_length=24, max_length=24,
        description="other loads on the battery, average W for each local hour 0..23 (e.g. an RV fridge)")

    def other_w(self, local_hour: int) -> float:
        return 0.0 if self.other_loads_w_by_hour is None else self.other_loads_w_by_hour[local_hour % 24]


def printer_standby_w(profile: PrinterProfile) -> float:
    """Printer powered and idle: board and display through the supply, plus the supply's own idle draw."""
    return profile.power.standby_w / profile.power.psu_efficiency + profile.power.psu_idle_w


def pause_hold_w(profile: PrinterProfile, bed_c: float, ambient_c: float) -> float:
    """Paused at a layer boundary with the bed kept warm (adhesion), hotend off, motors holding position."""
    dc_w = (profile.power.electronics_w + profile.power.steppers_w
            + profile.bed.holding_w(bed_c, ambient_c))
    return dc_w / profile.power.psu_efficiency + profile.power.psu_idle_w


class PlantSim:
    """The "true" battery of a simulation, advanced by the one plant model, with energy books."""

    def __init__(self, params: BatteryParams, soc: float) -> None:
        self.params = params
        self.state = BatteryState(soc=soc)
        self.pv_used_wh = 0.0
        self.pv_lost_wh = 0.0
        self.load_unserved_wh = 0.0

    @property
    def soc(self) -> float:
        return self.state.soc

    def step(self, pv_available_w: float, load_w: float, dt_s: float) -> PlantStep:
        self.state, result = step_battery(self.params, self.state, pv_available_w, load_w, dt_s)
        dt_h = dt_s / 3600.0
        self.pv_used_wh += result.pv_used_w * dt_h
        self.pv_lost_wh += result.pv_lost_w * dt_h
        self.load_unserved_wh += max(0.0, result.load_w - result.load_served_w) * dt_h
        return result
