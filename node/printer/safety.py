"""Host-side safety: a thermal watchdog over the printer's reports, and the G-code policy.

Why on the host: many stock boards ship with Marlin's thermal protection
disabled (THERMAL_PROTECTION_HOTENDS / _BED off, or badly tuned), and a printer
on an unattended off-grid node has nobody to smell the smoke.  The watchdog is
pure (reports and times in, a :class:`ThermalViolation` out); the worker acts
on it with ``M112`` (Marlin's emergency parser executes it even mid-command)
and then the relay hook, which cuts the printer's power where a relay exists.

What a job may send at all (no firmware flashing, no settings rewrites, no
temperature above the limits) is :mod:`node.printer.policy`, checked at the gate.
"""
from __future__ import annotations

from dataclasses import dataclass

from node.printer.config import SafetySection


@dataclass(frozen=True)
class ThermalViolation:
    heater: str
    reason: str


@dataclass
class _HeaterWatch:
    name: str
    max_c: float
    full_power_since_s: float | None = None
    temp_at_full_power_c: float = 0.0
    over_count: int = 0
    target_c: float = 0.0


class ThermalWatchdog:
    """Watches (temperature, target, PWM) reports; says when to cut the power, and why."""

    def __init__(self, config: SafetySection) -> None:
        self.config = config
        self.heaters = {"hotend": _HeaterWatch("hotend", config.max_hotend_c),
                        "bed": _HeaterWatch("bed", config.max_bed_c)}
        self.last_report_real_s: float | None = None

    def heater_on(self) -> bool:
        return any(h.target_c > 0 for h in self.heaters.values())

    def observe(self, heater: str, temp_c: float, target_c: float, pwm: float | None,
                sim_t_s: float, real_t_s: float) -> ThermalViolation | None:
        """One report of one heater; ``pwm`` in 0..1 or None if the firmware does not report it."""
        self.last_report_real_s = real_t_s
        watch = self.heaters[heater]
        watch.target_c = target_c
        limit_c = watch.max_c + self.config.overshoot_c
        if target_c > 0:
            limit_c = min(limit_c, max(target_c + self.config.overshoot_c + 10.0, target_c * 1.15))
        if temp_c > limit_c:
            watch.over_count += 1
            if watch.over_count >= self.config.confirmations:
                return ThermalViolation(heater, f"{heater} at {temp_c:.1f} °C, above the limit of {limit_c:.1f} °C")
        else:
            watch.over_count = 0
        if pwm is not None and target_c > 0 and pwm >= self.config.full_power_fraction:
            if watch.full_power_since_s is None:
                watch.full_power_since_s, watch.temp_at_full_power_c = sim_t_s, temp_c
            elif temp_c - watch.temp_at_full_power_c >= self.config.heating_min_rise_c:
                watch.full_power_since_s, watch.temp_at_full_power_c = sim_t_s, temp_c
            elif sim_t_s - watch.full_power_since_s >= self.config.heating_check_s:
                return ThermalViolation(heater, (
                    f"{heater} at full power for {sim_t_s - watch.full_power_since_s:.0f} s without rising "
                    f"{self.config.heating_min_rise_c:g} °C (stuck at {temp_c:.1f} °C): heater or thermistor fault"))
        else:
            watch.full_power_since_s = None
        return None

    def check_silence(self, real_t_s: float) -> ThermalViolation | None:
        """Reports stopped while a heater is on: the host can no longer see a fire coming."""
        if not self.heater_on() or self.last_report_real_s is None:
            return None
        silent_s = real_t_s - self.last_report_real_s
        if silent_s >= self.config.report_timeout_s:
            return ThermalViolation("all", f"no temperature report for {silent_s:.0f} s while a heater is on")
        return None
