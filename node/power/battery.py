"""State of charge of the battery bank: a pure estimator (no clock, no I/O) and its config.

Method (what Victron's BMV and most shunt monitors do, plus two learned corrections):

- **Coulomb counting.**  Charge in is scaled by the coulombic charge efficiency; charge out
  is scaled by Peukert's law (W. Peukert, 1897: at a discharge current above the 20-hour
  rate the usable capacity shrinks as ``(I20 / I) ** (k - 1)``) and by a capacity loss per
  kelvin below 25 °C — the same capacity law as :mod:`node.power.plant`.
- **Resync at full.**  When the voltage is at or above ``charged_v`` and the current is
  below the tail current (``tail_current_pct`` of capacity) for ``charged_dwell_s``, the bank
  is full: SoC = 100 %.  (Victron BMV defaults: tail 4 %, 3 min.)
- **Sensor offset learning.**  Between two resyncs the counted charge should return to
  exactly "full"; what is left over (the drift) divided by the time between them is the
  shunt's residual offset, which is then subtracted (a 50 mA offset is 1.2 Ah a day,
  1.3 % of a 94 Ah bank).  Learned with a gain below 1 and bounded.
- **Rest-voltage correction** — lead-acid only, and only after a long rest (current below
  ``rest_current_pct`` of capacity for ``rest_min_s``), when the voltage has relaxed to the
  open-circuit curve: the count is pulled towards the SoC that curve gives.  Not for
  LiFePO4, whose rest voltage is flat within ~30 mV from 20 to 90 % (a few mV of error
  would move the estimate by tens of percent).
- **Sag-corrected, filtered voltage.**  ``V - I * R_internal`` smoothed with a first-order
  filter: what the thresholds compare against.
- **Gaps.**  Between two samples more than ``max_gap_s`` apart (the daemon was down) nothing is
  counted: the SoC stays where it was.  While the daemon runs but telemetry is *lost* (the
  controller unplugged), :meth:`SocEstimator.bridge` counts the node's own known draw out and no
  PV in, so the estimate can only err towards empty; samples then continue from the bridged value.
  The bridged gap also marks the estimate uncertain (until a resync at full or a rest
  correction); either gap keeps the next resync from learning an offset.

Accuracy (tests/power/test_battery.py, tests/power/week_sim.py): a capacity error is not
observable between two "full" anchors, so the SoC error grows as ``capacity error x depth
of discharge since the last anchor``.  With the configured capacity 10 % off, a 1 % / 50 mA
current sensor and three grey days without a full charge, the estimate stays within 3
points while the bank cycles down to ~80 %; cycled down to ~50 % it drifts to 4-6 points
(lead-acid's night-time rest correction pulls it back each morning).  Set ``capacity_ah``
to the bank's measured capacity as it ages.
"""
from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from node.power.config import BatterySection
from node.power.plant import open_circuit_v, soc_from_rest_v
from node.power.thresholds import Level, ThresholdMonitor

#: controller states in which the charger, not the battery, sets the voltage
_CHARGER_HOLDING = ("absorption", "float", "storage", "equalize")




class SocEstimate(BaseModel):
    model_config = ConfigDict(frozen=True)

    soc_pct: float
    corrected_v: float = Field(description="filtered V - I*R: the voltage thresholds compare with")
    level: Level
    full: bool = Field(description="a resync at full happened at this sample")
    resting_s: float
    offset_a: float
    last_sync_t_s: float | None
    certain: bool = Field(description="False until the first resync, rest correction or given start")


class SocEstimator:
    """Pure: feed it samples in time order with :meth:`update`."""

    def __init__(self, battery: BatterySection, initial_soc: float | None = None) -> None:
        self.battery = battery
        self.params = battery.plant_params()
        self.capacity_ah = battery.capacity_ah
        self.charge_efficiency = battery.value("charge_efficiency")
        self.charged_v = battery.value("charged_v")
        self.tail_a = battery.tail_current_pct / 100.0 * battery.capacity_ah
        self.rest_a = battery.rest_current_pct / 100.0 * battery.capacity_ah
        self.monitor = ThresholdMonitor(battery.resolved_thresholds())
        self.soc: float | None = initial_soc
        self.certain = initial_soc is not None
        self.offset_a = 0.0
        self.syncs = 0
        self.rest_corrections = 0
        self.last_sync_t_s: float | None = None
        self._t_s: float | None = None
        self._filtered_v: float | None = None
        self._full_since_s: float | None = None
        self._synced_this_episode = False
        self._holding_full = False    # after a resync, while the charger floats the full bank
        self._hold_ah = 0.0
        self._hold_s = 0.0
        self._rest_since_s: float | None = None
        self._rest_corrected = False
        self._rest_v_sum, self._rest_v_n = 0.0, 0
        self._ah_since_sync = 0.0     # rated-equivalent Ah counted since the last resync (0 = full)
        self._gap_since_sync = False  # an unintegrated gap makes the drift meaningless
        self._blind_since_sync = False  # a stretch not counted, or counted blind (bridged), since the resync
        self._bridged = False         # bridge() counted a blind gap: restart the voltage filter
        self.bridged_s = 0.0          # node seconds counted blind (telemetry lost) since the last resync

    @property
    def anchored_full_s(self) -> float | None:
        """When the count was last anchored at a full battery, if it has counted every stretch since (a short
        restart included: the saved state goes on); None when it has not, or was never anchored.  The planner's
        margin for the count's drift grows from there (node.plan.guard.EnergyGuard.soc_margin_wh)."""
        if self.last_sync_t_s is None or not self.certain or self._blind_since_sync:
            return None
        return self.last_sync_t_s

    @property
    def corrected_v(self) -> float | None:
        """The filtered, sag-corrected battery voltage (what the thresholds compare with)."""
        return self._filtered_v

    # --- persistence (the Telemetry component keeps it across restarts) ---------------------
    def state(self) -> dict[str, Any]:
        return {"soc": self.soc, "certain": self.certain, "offset_a": self.offset_a, "t_s": self._t_s,
                "last_sync_t_s": self.last_sync_t_s, "ah_since_sync": self._ah_since_sync,
                "gap_since_sync": self._gap_since_sync, "blind_since_sync": self._blind_since_sync,
                "syncs": self.syncs, "bridged_s": self.bridged_s}

    def restore(self, state: dict[str, Any]) -> None:
        self.soc = state.get("soc")
        self.certain = bool(state.get("certain")) and self.soc is not None
        self.offset_a = float(state.get("offset_a") or 0.0)
        self.last_sync_t_s = state.get("last_sync_t_s")
        self._ah_since_sync = float(state.get("ah_since_sync") or 0.0)
        self._gap_since_sync = True  # the daemon was down: do not learn from this interval
        # a state saved before this field existed: its count since the resync is not known to be whole
        self._blind_since_sync = bool(state.get("blind_since_sync", True))
        self.syncs = int(state.get("syncs") or 0)
        self.bridged_s = float(state.get("bridged_s") or 0.0)
        self._t_s = state.get("t_s")

    # --- the estimator ------------------------------------------------------------------------
    def update(self, t_s: float, battery_v: float, battery_a: float,
               temperature_c: float | None = None, charge_state: str | None = None) -> SocEstimate:
        """One sample.  ``charge_state`` is the controller's ("float", "absorption", ...) if known."""
        current_a = battery_a - self.offset_a
        sag_corrected_v = battery_v - battery_a * self.battery.internal_resistance_ohm
        dt_s = 0.0 if self._t_s is None else t_s - self._t_s
        if self._filtered_v is None or dt_s > self.battery.max_gap_s or dt_s < 0 or self._bridged:
            self._filtered_v = sag_corrected_v
            self._bridged = False
        else:
            alpha = 1.0 - math.exp(-dt_s / self.battery.voltage_filter_s)
            self._filtered_v += alpha * (sag_corrected_v - self._filtered_v)
        if self.soc is None:  # first sample ever: the best guess is the voltage curve
            self.soc = soc_from_rest_v(self.battery.chemistry, self._filtered_v, self.battery.cells)
        if self._t_s is not None and dt_s > self.battery.max_gap_s:
            self._gap_since_sync = True
            self._blind_since_sync = True
        elif dt_s > 0:
            self._integrate(current_a, dt_s, 25.0 if temperature_c is None else temperature_c)
        self._t_s = t_s
        full = self._check_full(t_s, battery_v, current_a)
        self._check_hold(t_s, dt_s, current_a, charge_state)
        resting_s = self._check_rest(t_s, current_a, charge_state, sag_corrected_v)
        level = self.monitor.update(self._filtered_v, self.soc * 100.0)
        return SocEstimate(soc_pct=round(self.soc * 100.0, 3), corrected_v=round(self._filtered_v, 4),
                           level=level, full=full, resting_s=resting_s, offset_a=self.offset_a,
                           last_sync_t_s=self.last_sync_t_s, certain=self.certain)

    def bridge(self, t_s: float, draw_w: float) -> float | None:
        """Count a stretch without measurements (telemetry lost); return the SoC in % (None: unknown).

        Pessimistic on purpose: the node's own known draw (``draw_w``: the printer's estimate from its
        heater PWM plus the node's base load) is taken out of the bank and no PV is counted in, since
        nothing says the sun is there.  When samples return the count goes on from this value, not
        from the last measured one: the energy used meanwhile is not forgotten.  The gap also makes
        the estimate uncertain (``certain`` = False until the next resync at full or, for lead-acid,
        a rest correction), keeps the next resync from learning an offset, and restarts the voltage
        filter at the first sample.  Only stretches after a sample of this run are counted (a restored
        state's gap is not: see :meth:`restore`).
        """
        if self.soc is None or self._t_s is None:
            return None
        dt_s = t_s - self._t_s
        if dt_s > 0:
            volts = self._filtered_v or self.params.nominal_v
            self._integrate(-max(0.0, draw_w) / volts, dt_s, 25.0)
            self._t_s = t_s
            self.bridged_s += dt_s
        self._gap_since_sync = True
        self._blind_since_sync = True
        self._bridged = True
        self.certain = False
        self._full_since_s = None  # a stay at full or at rest cannot span what was not seen
        self._rest_since_s = None
        self._rest_corrected = False
        self._rest_v_sum, self._rest_v_n = 0.0, 0
        return round(self.soc * 100.0, 3)

    def _integrate(self, current_a: float, dt_s: float, temperature_c: float) -> None:
        assert self.soc is not None
        if current_a >= 0:
            rated_ah = current_a * self.charge_efficiency * dt_s / 3600.0
        else:
            usable_ah = self.params.usable_capacity_ah(-current_a, temperature_c)
            rated_ah = current_a * dt_s / 3600.0 * (self.params.capacity_ah / usable_ah)
        self._ah_since_sync += rated_ah
        self.soc = min(1.0, max(0.0, self.soc + rated_ah / self.capacity_ah))

    def _check_full(self, t_s: float, battery_v: float, current_a: float) -> bool:
        if battery_v >= self.charged_v and abs(current_a) <= self.tail_a:
            if self._full_since_s is None:
                self._full_since_s = t_s
            if t_s - self._full_since_s >= self.battery.charged_dwell_s and not self._synced_this_episode:
                self._synced_this_episode = True  # one resync per stay at full
                self._resync(t_s)
                return True
        else:
            self._full_since_s = None
            self._synced_this_episode = False
        return False

    def _resync(self, t_s: float) -> None:
        """Full: SoC = 100 %, and learn the offset from how far the count drifted."""
        if (self.battery.learn_offset and self.certain and not self._gap_since_sync
                and self.last_sync_t_s is not None):
            elapsed_h = (t_s - self.last_sync_t_s) / 3600.0
            drift_ah = self._ah_since_sync  # > 0: counted more charge than went in
            if elapsed_h >= 36.0 and abs(drift_ah) < 0.2 * self.capacity_ah:  # short: sync jitter dominates
                learned = self.offset_a + 0.7 * drift_ah / elapsed_h
                self.offset_a = max(-self.battery.max_offset_a, min(self.battery.max_offset_a, learned))
        self.soc = 1.0
        self.certain = True
        self._holding_full = True
        self._hold_ah = self._hold_s = 0.0
        self.syncs += 1
        self.last_sync_t_s = t_s
        self._ah_since_sync = 0.0
        self._gap_since_sync = False
        self._blind_since_sync = False
        self.bridged_s = 0.0

    def _check_hold(self, t_s: float, dt_s: float, current_a: float, charge_state: str | None) -> None:
        """While the charger floats the bank after a resync it stays full: pin SoC at 100 %.

        The count restarts when the float ends, so float current (real in lead-acid: gassing,
        self-discharge) is not taken as stored charge.  For LiFePO4 the true float current is
        ~0, so what the sensor reads meanwhile is its offset: learn it (>= 30 min of float).
        """
        if not self._holding_full:
            return
        if charge_state in ("float", "storage") and abs(current_a) <= self.tail_a:
            self.soc = 1.0
            self._ah_since_sync = 0.0
            self.last_sync_t_s = t_s
            self._hold_ah += current_a * dt_s / 3600.0
            self._hold_s += dt_s
            return
        if charge_state in ("absorption", "equalize") and abs(current_a) <= self.tail_a:
            return  # still topping up: keep holding
        self._holding_full = False
        learn = self.battery.float_current_is_offset
        if learn is None:
            learn = self.battery.chemistry == "lifepo4"
        if learn and self.battery.learn_offset and self._hold_s >= 1800.0:
            mean_a = self._hold_ah * 3600.0 / self._hold_s
            learned = self.offset_a + 0.8 * mean_a
            self.offset_a = max(-self.battery.max_offset_a, min(self.battery.max_offset_a, learned))

    def _rest_correct(self, rest_v: float) -> None:
        """Pull the count into the band of SoC the rest voltage allows (+-0.5 mV per cell).

        A dead band, not a point: near full the lead-acid curve is so flat (~1 mV per cell
        per %) that a few mV of noise or IR error would move the SoC by percents.
        """
        assert self.soc is not None
        band_v = 0.0005 * self.battery.cells
        soc_low = soc_from_rest_v("lead_acid", rest_v - band_v, self.battery.cells)
        soc_high = soc_from_rest_v("lead_acid", rest_v + band_v, self.battery.cells)
        if not self.certain:
            self.soc = soc_from_rest_v("lead_acid", rest_v, self.battery.cells)
        elif self.soc < soc_low:
            self.soc = soc_low
        elif self.soc > soc_high:
            self.soc = soc_high
        self.certain = True
        self.rest_corrections += 1
        self._rest_corrected = True

    def _check_rest(self, t_s: float, current_a: float, charge_state: str | None,
                    sag_corrected_v: float) -> float:
        if abs(current_a) > self.rest_a or charge_state in _CHARGER_HOLDING:
            self._rest_since_s = None
            self._rest_corrected = False
            self._rest_v_sum, self._rest_v_n = 0.0, 0
            return 0.0
        if self._rest_since_s is None:
            self._rest_since_s = t_s
        resting_s = t_s - self._rest_since_s
        if resting_s >= self.battery.rest_min_s / 2:  # average the relaxed second half of the rest
            self._rest_v_sum += sag_corrected_v
            self._rest_v_n += 1
        if (self.battery.chemistry == "lead_acid" and not self._rest_corrected and not self._holding_full
                and resting_s >= self.battery.rest_min_s and self._rest_v_n > 0):
            self._rest_correct(self._rest_v_sum / self._rest_v_n)
        return resting_s


def rest_voltage(battery: BatterySection, soc: float) -> float:
    """Open-circuit voltage of the configured bank at ``soc`` (for displays and tests)."""
    return open_circuit_v(battery.chemistry, soc, battery.cells)
