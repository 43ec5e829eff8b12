"""The one PV + battery plant model: pure functions, no clock, no I/O.

Used by the simulated charge controller (to produce real-looking VE.Direct
numbers), by the SoC estimator's tests (as the "true" battery), and by the
planner's energy simulation.  One model, so the planner plans against the
same physics the simulation runs.

Sign convention: ``battery_w`` / ``battery_a`` are positive while charging.

Battery voltage: open-circuit voltage from a per-chemistry SoC curve plus
``current * internal resistance`` (Thevenin model without the RC branch).
Curves: LiFePO4 per cell from typical manufacturer data (flat 3.2-3.35 V
plateau between 20 and 90 %); lead-acid (flooded/AGM) rest voltage 11.9 V
empty to 12.7 V full for a 12 V bank (e.g. Battery University BU-903).
Capacity at high discharge rates follows Peukert's law (W. Peukert, 1897).
"""
from __future__ import annotations

import bisect
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Chemistry = Literal["lifepo4", "lead_acid"]

# (soc fraction, open-circuit volts per cell)
_OCV_PER_CELL: dict[str, list[tuple[float, float]]] = {
    "lifepo4": [(0.0, 2.80), (0.05, 3.00), (0.10, 3.12), (0.20, 3.20), (0.30, 3.24), (0.40, 3.26),
                (0.50, 3.27), (0.60, 3.28), (0.70, 3.30), (0.80, 3.32), (0.90, 3.34), (0.95, 3.36),
                (0.99, 3.40), (1.0, 3.45)],
    "lead_acid": [(0.0, 1.930), (0.10, 1.955), (0.20, 1.980), (0.30, 2.005), (0.40, 2.030),
                  (0.50, 2.050), (0.60, 2.070), (0.70, 2.090), (0.80, 2.105), (0.90, 2.120), (1.0, 2.130)],
}
CELL_V = {"lifepo4": 3.2, "lead_acid": 2.0}
#: the curves' SoC points, for bisect (the plant steps every 5 minutes of every year-study run)
_OCV_SOC = {chemistry: [p[0] for p in curve] for chemistry, curve in _OCV_PER_CELL.items()}


def open_circuit_v(chemistry: Chemistry, soc: float, cells: int) -> float:
    """Rest voltage of a bank of ``cells`` cells in series at state of charge ``soc`` (0..1)."""
    curve = _OCV_PER_CELL[chemistry]
    soc = min(1.0, max(0.0, soc))
    i = bisect.bisect_left(_OCV_SOC[chemistry], soc)
    if i == 0:
        return curve[0][1] * cells
    (s0, v0), (s1, v1) = curve[i - 1], curve[min(i, len(curve) - 1)]
    frac = 0.0 if s1 == s0 else (soc - s0) / (s1 - s0)
    return (v0 + frac * (v1 - v0)) * cells


def soc_from_rest_v(chemistry: Chemistry, battery_v: float, cells: int) -> float:
    """Inverse of :func:`open_circuit_v` (meaningful only after a long rest)."""
    curve = _OCV_PER_CELL[chemistry]
    v_cell = battery_v / cells
    if v_cell <= curve[0][1]:
        return 0.0
    for (s0, v0), (s1, v1) in zip(curve, curve[1:], strict=False):
        if v0 <= v_cell <= v1:
            return s0 + (s1 - s0) * ((v_cell - v0) / (v1 - v0) if v1 > v0 else 0.0)
    return 1.0


class BatteryParams(BaseModel):
    """A battery bank as the plant (and the planner) sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chemistry: Chemistry = "lifepo4"
    cells: int = Field(4, ge=1, description="cells in series (4 = a 12 V LiFePO4 bank, 6 = 12 V lead-acid)")
    capacity_ah: float = Field(100.0, gt=0, description="at the 20-hour rate")
    internal_resistance_ohm: float = Field(0.02, ge=0)
    charge_efficiency: float = Field(0.97, gt=0, le=1, description="coulombic: charge stored / charge in")
    peukert_exponent: float = Field(1.03, ge=1.0, le=1.6, description="~1.03 LiFePO4, 1.1-1.3 lead-acid")
    max_charge_a: float = Field(50.0, gt=0)
    temperature_coeff_per_k: float = Field(0.005, ge=0, description="capacity loss per kelvin below 25 C")
    # The charger's constant-voltage phases.  None (the default) keeps an ideal charger that
    # pushes full current until the battery is full; set them to see absorption and float as a
    # real MPPT charger produces them (the simulated controller and the SoC tests do).
    absorption_v: float | None = Field(None, gt=0, description="charger's absorption (constant-voltage) setpoint")
    float_v: float | None = Field(None, gt=0, description="charger's float setpoint, held once full")
    acceptance_start_soc: float = Field(
        0.95, ge=0.5, le=1.0,
        description="with absorption_v set: SoC above which charge acceptance tapers (~0.8 lead-acid, ~0.95 LiFePO4)")

    @property
    def nominal_v(self) -> float:
        return CELL_V[self.chemistry] * self.cells

    @property
    def capacity_wh(self) -> float:
        return self.capacity_ah * self.nominal_v

    def usable_capacity_ah(self, discharge_a: float, temperature_c: float = 25.0) -> float:
        """Peukert-corrected capacity at a given discharge current (20 h rate reference)."""
        rated_a = self.capacity_ah / 20.0
        cap = self.capacity_ah
        if discharge_a > rated_a:
            cap *= (rated_a / discharge_a) ** (self.peukert_exponent - 1.0)
        if temperature_c < 25.0:
            cap *= max(0.5, 1.0 - self.temperature_coeff_per_k * (25.0 - temperature_c))
        return cap

    def acceptance_a(self, soc: float) -> float:
        """Largest charge current the battery takes at ``soc`` while the charger holds absorption.

        Above ``acceptance_start_soc`` acceptance falls linearly to zero at full (lead-acid's
        long absorption tail, LiFePO4's short one), floored at C/100 so "full" comes in finite time.
        """
        if self.absorption_v is None or soc <= self.acceptance_start_soc:
            return self.max_charge_a
        remaining = (1.0 - soc) / max(1e-9, 1.0 - self.acceptance_start_soc)
        return max(self.capacity_ah / 100.0, self.max_charge_a * remaining)


class BatteryState(BaseModel):
    model_config = ConfigDict(frozen=True)

    soc: float = Field(0.8, ge=0, le=1)
    temperature_c: float = 25.0


class PlantStep(BaseModel):
    """What happened during one step (all averages over the step)."""

    model_config = ConfigDict(frozen=True)

    soc: float
    battery_v: float
    battery_a: float
    pv_available_w: float
    pv_used_w: float
    pv_lost_w: float
    load_w: float
    load_served_w: float
    empty: bool
    #: what the charger is doing: "bulk", "absorption", "float" (charging side) or "discharge"
    charge_phase: str = "bulk"


def step_battery(params: BatteryParams, state: BatteryState, pv_available_w: float,
                 load_w: float, dt_s: float) -> tuple[BatteryState, PlantStep]:
    """Advance the battery by ``dt_s`` with ``pv_available_w`` offered and ``load_w`` drawn.

    The charger takes only what the battery can accept (max charge current,
    and nothing when full); the rest of the sunshine is lost.  Charge in is
    scaled by the coulombic efficiency; discharge is Peukert-corrected.  An
    empty battery serves no load (``empty`` is set: a brownout).
    """
    ocv = open_circuit_v(params.chemistry, state.soc, params.cells)
    net_w = pv_available_w - load_w
    if net_w >= 0:
        headroom_ah = (1.0 - state.soc) * params.capacity_ah
        max_a = min(params.max_charge_a, headroom_ah * 3600.0 / dt_s / params.charge_efficiency) if dt_s > 0 else 0.0
        acceptance_a = params.acceptance_a(state.soc)
        offered_a = net_w / max(ocv, 1e-6)
        current_a = min(offered_a, max_a, acceptance_a)
        # constant voltage: the battery (not the sun) limits the current, near full or by acceptance
        limited_by_battery = params.absorption_v is not None and min(acceptance_a, max_a) < offered_a
        phase = "absorption" if limited_by_battery else "bulk"
        if state.soc >= 1.0 - 1e-9 or max_a <= 0:
            phase = "float"
        stored_ah = current_a * params.charge_efficiency * dt_s / 3600.0
        soc = min(1.0, state.soc + stored_ah / params.capacity_ah)
        pv_used_w = load_w + current_a * ocv
        served_w, empty = load_w, False
    else:
        draw_a = -net_w / max(ocv, 1e-6)
        available_ah = state.soc * params.usable_capacity_ah(draw_a, state.temperature_c)
        needed_ah = draw_a * dt_s / 3600.0
        if needed_ah <= available_ah:
            soc = max(0.0, state.soc - needed_ah / params.usable_capacity_ah(draw_a, state.temperature_c))
            current_a, served_w, empty = -draw_a, load_w, False
        else:
            fraction = available_ah / needed_ah if needed_ah > 0 else 0.0
            soc, current_a = 0.0, -draw_a * fraction
            served_w, empty = pv_available_w + (-net_w) * fraction, True
        pv_used_w = pv_available_w
        phase = "discharge"
    battery_v = ocv + current_a * params.internal_resistance_ohm
    if params.absorption_v is not None and net_w >= 0:
        if phase == "absorption":
            battery_v = params.absorption_v
        elif phase == "float" and params.float_v is not None:
            battery_v = params.float_v
        else:
            battery_v = min(battery_v, params.absorption_v)
    new_state = BatteryState(soc=soc, temperature_c=state.temperature_c)
    return new_state, PlantStep(
        soc=soc, battery_v=battery_v, battery_a=current_a, pv_available_w=pv_available_w,
        pv_used_w=pv_used_w, pv_lost_w=max(0.0, pv_available_w - pv_used_w), load_w=load_w,
        load_served_w=served_w, empty=empty, charge_phase=phase)
