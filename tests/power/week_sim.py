"""A simulated week of a solar node, the plant as truth and the SoC estimator as observer.

The plant differs from what the estimator is told: its capacity is off by a factor,
the current sensor has a 1 % gain error, a 50 mA offset and noise, the voltage reading
has noise, the bank's resistance is 10 % higher, and its temperature swings daily
(the estimator reads it through a sensor 0.7 K off).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from node.power.battery import SocEstimator
from node.power.config import BatterySection
from node.power.plant import BatteryState, step_battery

DAY_S = 86400.0
#: sky clearness per day: a clear day, three grey days (no full charge), then mixed weather
CLEARNESS = [1.0, 0.22, 0.2, 0.24, 1.0, 0.6, 0.9]
#: printer jobs per day: (start hour, end hour, watts); short evening jobs on days 0 and 4
PRINTS = {0: [(9.0, 15.0, 150.0), (19.0, 20.5, 80.0)], 1: [(10.0, 14.0, 90.0)], 2: [(10.0, 14.0, 90.0)],
          3: [(10.0, 14.0, 90.0)], 4: [(9.5, 14.0, 170.0), (19.0, 20.5, 80.0)], 5: [(9.0, 14.0, 150.0)],
          6: [(9.0, 16.0, 150.0)]}
BASE_LOAD_W = 6.0   # Raspberry Pi, controller, radio
PV_PEAK_W = 400.0 * 0.85


def pv_w(t_s: float) -> float:
    day, hour = int(t_s // DAY_S), (t_s % DAY_S) / 3600.0
    sun = math.sin(math.pi * (hour - 6.0) / 13.0)
    return PV_PEAK_W * CLEARNESS[day % 7] * max(0.0, sun) ** 1.2 if 6.0 < hour < 19.0 else 0.0


def load_w(t_s: float) -> float:
    day, hour = int(t_s // DAY_S), (t_s % DAY_S) / 3600.0
    return BASE_LOAD_W + sum(w for start, end, w in PRINTS.get(day % 7, []) if start <= hour < end)


def temperature_c(t_s: float) -> float:
    return 15.0 + 8.0 * math.sin(2 * math.pi * ((t_s % DAY_S) / 3600.0 - 9.0) / 24.0)


@dataclass
class WeekResult:
    max_error_pp: float
    sync_times_s: list[float] = field(default_factory=list)
    true_soc_min: float = 1.0
    errors_pp: list[float] = field(default_factory=list)
    offset_a: float = 0.0
    rest_corrections: int = 0


def simulate_week(battery: BatterySection, capacity_factor: float, seed: int = 1, step_s: float = 30.0,
                  days: int = 7) -> WeekResult:
    rng = random.Random(seed)
    plant = battery.plant_params().model_copy(update={
        "capacity_ah": battery.capacity_ah * capacity_factor,
        "internal_resistance_ohm": battery.internal_resistance_ohm * 1.1,
    })
    state = BatteryState(soc=1.0, temperature_c=temperature_c(0.0))
    estimator = SocEstimator(battery, initial_soc=1.0)
    result = WeekResult(max_error_pp=0.0)
    t_s = 0.0
    while t_s < days * DAY_S:
        state = BatteryState(soc=state.soc, temperature_c=temperature_c(t_s))
        state, step = step_battery(plant, state, pv_w(t_s), load_w(t_s), step_s)
        t_s += step_s
        measured_a = step.battery_a * 1.01 + 0.05 + rng.gauss(0.0, 0.15)
        measured_v = step.battery_v + rng.gauss(0.0, 0.01)
        estimate = estimator.update(t_s, measured_v, measured_a, temperature_c(t_s) + 0.7, step.charge_phase)
        if estimate.full:
            result.sync_times_s.append(t_s)
        error_pp = abs(estimate.soc_pct - state.soc * 100.0)
        result.errors_pp.append(error_pp)
        result.max_error_pp = max(result.max_error_pp, error_pp)
        result.true_soc_min = min(result.true_soc_min, state.soc)
    result.offset_a = estimator.offset_a
    result.rest_corrections = estimator.rest_corrections
    return result
