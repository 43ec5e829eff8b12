"""The printer's electrical power: from a G-code timeline (planning) or heater PWM (run time).

Power model (per printer profile, ``node/printer/profile.py``)::

    dc_w   = electronics_w + sum(heater_w * pwm) + part_fan_w * fan
             + steppers_w (motors enabled) + hotend_fan_w (hotend above 50 C)
    wall_w = dc_w / psu_efficiency + psu_idle_w

Heaters follow the profile's first-order thermal model.  The firmware's PID
is idealised as bang-bang with a perfect hold: full power until the target is
reached, then exactly the holding power ``loss_w_per_k * (target - ambient)``;
below the target with the heater off, the temperature decays exponentially
toward ambient.  Between G-code events the power is therefore piecewise
constant with breakpoints computed in closed form, so the energy integral is
exact for the model (no time stepping).

M109/M190 waits are not in the slicer's estimate: their durations come from
the same model (time to reach the target at full power from the current
temperature, with the other heaters evolving meanwhile).  Marlin's extra
"residency" seconds after reaching the target are not modelled.

Reference: lumped-capacitance heating, Incropera, *Fundamentals of Heat and
Mass Transfer*, ch. 5; Marlin ``M109``/``M190`` (``Temperature::wait_for_hotend``).
"""
from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from node.printer.profile import HeaterModel, PrinterProfile


class TimelineTooLong(ValueError):
    """The heat-up waits push the print past ``PowerIntegrator.MAX_TOTAL_S``."""


HOTEND_FAN_ON_C = 50.0  # Marlin EXTRUDER_AUTO_FAN_TEMPERATURE default
AT_TARGET_K = 0.05      # a heater within this of its target counts as holding


# ----------------------------------------------------------------- run time
def marlin_pwm_fraction(raw: float, full_scale: float = 127.0) -> float:
    """Marlin's ``@:``/``B@:`` report (0..127 on most boards) as a 0..1 duty cycle."""
    if not math.isfinite(raw) or full_scale <= 0:
        raise ValueError(f"heater PWM report {raw!r} / {full_scale!r} is not a number")
    return min(1.0, max(0.0, raw / full_scale))


def printer_w_from_pwm(profile: PrinterProfile, hotend_pwm: float, bed_pwm: float, part_fan: float = 0.0,
                       steppers_on: bool = True, hotend_fan_on: bool = True) -> float:
    """Wall power of the printer now, from the heater duty cycles it reports (0..1 each).

    Any node gets a printer-power figure this way without a power meter; the
    heaters dominate, so the figure is as good as the profile's wattages
    (``calibrate`` fits them to a meter once).
    """
    for label, value in (("hotend_pwm", hotend_pwm), ("bed_pwm", bed_pwm), ("part_fan", part_fan)):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{label} must be within 0..1, got {value!r}")
    return profile.electrical_w(hotend_pwm, bed_pwm, part_fan, steppers_on=steppers_on, hotend_fan_on=hotend_fan_on)


def printer_w_from_report(profile: PrinterProfile, hotend_pwm: float | None, bed_pwm: float | None,
                          hotend_target_c: float, bed_target_c: float, hotend_c: float, ambient_c: float) -> float:
    """Wall power from one temperature report, when a heater's PWM may be missing.

    Firmware that reports no ``@:``/``B@:`` still reports targets: a heater at
    its target draws its holding power (the thermal model's loss at that
    temperature), which is what it averages to once settled.
    """
    def duty(pwm: float | None, target_c: float, heater: HeaterModel) -> float:
        if pwm is not None:
            return pwm
        return heater.holding_w(target_c, ambient_c) / heater.heater_w if target_c > 0 else 0.0

    heating = hotend_target_c > 0 or bed_target_c > 0
    return printer_w_from_pwm(profile, duty(hotend_pwm, hotend_target_c, profile.hotend),
                              duty(bed_pwm, bed_target_c, profile.bed),
                              steppers_on=heating, hotend_fan_on=hotend_c > HOTEND_FAN_ON_C)


def standby_wall_w(profile: PrinterProfile) -> float:
    """Wall power of the printer switched on but idle (motors off, heaters off): between prints.

    Not part of a print's profile (a printing printer is never in standby);
    the planner adds it for the idle time it keeps the printer powered.
    """
    return profile.power.standby_w / profile.power.psu_efficiency + profile.power.psu_idle_w


class PowerSample(BaseModel):
    """One measured power reading with the printer state at that moment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hotend_pwm: float = Field(ge=0, le=1)
    bed_pwm: float = Field(ge=0, le=1)
    part_fan: float = Field(0.0, ge=0, le=1)
    steppers_on: bool = True
    measured_w: float = Field(ge=0)


def calibrate(profile: PrinterProfile, measured_samples: Sequence[PowerSample]) -> PrinterProfile:
    """Fit the profile's wattages to measured power; returns a new, validated profile.

    Linear least squares on ``measured_w = c0 + ch*hotend_pwm + cb*bed_pwm +
    cf*fan + cs*steppers``.  The supply efficiency is not identifiable from wall
    power alone, so it is kept and the DC wattages are ``c * efficiency``; a
    feature that never varies in the samples keeps the profile's value (its
    share is subtracted first).  The constant term sets ``electronics_w``
    (hotend fan and supply idle draw kept).  The hotend fan is assumed on.
    """
    import numpy as np

    samples = list(measured_samples)
    if len(samples) < 3:
        raise ValueError(f"calibration needs at least 3 samples, got {len(samples)}")
    eff = profile.power.psu_efficiency
    features = {
        "hotend": (np.array([s.hotend_pwm for s in samples]), profile.hotend.heater_w),
        "bed": (np.array([s.bed_pwm for s in samples]), profile.bed.heater_w),
        "fan": (np.array([s.part_fan for s in samples]), profile.power.part_fan_w),
        "steppers": (np.array([1.0 if s.steppers_on else 0.0 for s in samples]), profile.power.steppers_w),
    }
    y = np.array([s.measured_w for s in samples], dtype=float)
    free = [name for name, (x, _) in features.items() if np.ptp(x) > 1e-9]
    for name, (x, dc_w) in features.items():
        if name not in free:
            y = y - x * dc_w / eff
    design = np.column_stack([np.ones_like(y)] + [features[name][0] for name in free])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    fitted = {name: float(c) * eff for name, c in zip(free, coef[1:], strict=True)}
    for name, value in fitted.items():
        if value < 0:
            raise ValueError(f"calibration gives a negative {name} power ({value:.1f} W): check the samples")
    electronics_w = (float(coef[0]) - profile.power.psu_idle_w) * eff - profile.power.hotend_fan_w
    data = profile.model_dump()
    data["hotend"]["heater_w"] = fitted.get("hotend", profile.hotend.heater_w)
    data["bed"]["heater_w"] = fitted.get("bed", profile.bed.heater_w)
    data["power"]["part_fan_w"] = fitted.get("fan", profile.power.part_fan_w)
    data["power"]["steppers_w"] = fitted.get("steppers", profile.power.steppers_w)
    data["power"]["electronics_w"] = max(0.0, electronics_w)
    return PrinterProfile.model_validate(data)


# ----------------------------------------------------------------- planning
class HeaterState:
    """One heater following the profile's thermal model under an ideal controller."""

    __slots__ = ("model", "ambient_c", "temp_c", "target_c", "tau_s", "_heater_w", "_loss_w_per_k")

    def __init__(self, model: HeaterModel, ambient_c: float, temp_c: float, target_c: float = 0.0) -> None:
        self.model = model
        self.ambient_c = ambient_c
        self.temp_c = temp_c
        self.target_c = target_c
        self.tau_s = model.heat_capacity_j_per_k / model.loss_w_per_k
        self._heater_w = model.heater_w
        self._loss_w_per_k = model.loss_w_per_k

    def _holds(self) -> bool:
        return self.target_c > self.ambient_c and abs(self.temp_c - self.target_c) <= AT_TARGET_K

    def power_w(self) -> float:
        if self._holds():
            return min(self._heater_w, self._loss_w_per_k * (self.target_c - self.ambient_c))
        if self.temp_c < self.target_c:
            return self._heater_w
        return 0.0

    def seconds_to_next_change(self) -> float:
        """Time until the power changes by itself (target reached while heating or cooling)."""
        if self._holds():
            return math.inf
        if self.temp_c < self.target_c:
            return self.model.heatup_s(self.temp_c, self.target_c, self.ambient_c)
        if self.target_c > self.ambient_c:  # cooling down to a lower, still heated, target
            return self.tau_s * math.log((self.temp_c - self.ambient_c) / (self.target_c - self.ambient_c))
        if self.temp_c - self.ambient_c < 0.01:  # cooled to ambient: nothing changes any more
            return math.inf
        # cooling to ambient never ends; cut it in tau-long pieces so the profile follows the decay
        return self.tau_s

    def advance(self, dt_s: float) -> None:
        if dt_s <= 0:
            return
        if self._holds():
            self.temp_c = self.target_c
            return
        heating = self.temp_c < self.target_c
        t_inf = self.ambient_c + (self._heater_w / self._loss_w_per_k if heating else 0.0)
        new_c = t_inf + (self.temp_c - t_inf) * math.exp(-dt_s / self.tau_s)
        # never overshoot the target because of rounding of the breakpoint time
        if (heating and new_c > self.target_c) or (not heating and self.target_c > self.ambient_c
                                                   and new_c < self.target_c):
            new_c = self.target_c
        self.temp_c = new_c

    def wait_s(self, also_cooling: bool) -> float:
        """How long M109/M190 waits here (inf if the target cannot be reached)."""
        if self.temp_c < self.target_c - AT_TARGET_K:
            return self.model.heatup_s(self.temp_c, self.target_c, self.ambient_c)
        if also_cooling and self.temp_c > self.target_c + AT_TARGET_K:
            if self.target_c <= self.ambient_c:
                return math.inf
            return self.seconds_to_next_change()
        return 0.0


@dataclass
class Timeline:
    """Result of integrating power over the print on the total clock (motion + waits)."""

    minute_j: array = field(default_factory=lambda: array("d"))  # energy in each minute (8 bytes each)
    heatup_s: float = 0.0
    heatup_wh: float = 0.0
    energy_wh: float = 0.0
    peak_w: float = 0.0
    max_hotend_c: float = 0.0
    max_bed_c: float = 0.0
    warnings: list[str] = field(default_factory=list)


class PowerIntegrator:
    """Walks the analysis core's events in time order and integrates wall power.

    ``t_s`` is the total clock (motion + heat-up waits); the events carry motion
    time, and ``total_s(motion_s)`` converts.
    """

    MAX_WAIT_S = 3600.0
    MAX_TOTAL_S = 90 * 86400.0

    def __init__(self, profile: PrinterProfile, ambient_c: float) -> None:
        self.profile = profile
        self.ambient_c = ambient_c
        self.hotends: dict[int, HeaterState] = {}
        self.bed = HeaterState(profile.bed, ambient_c, ambient_c)
        self.fan = 0.0
        self.steppers_on = False
        self.motion_s = 0.0
        self.t_s = 0.0
        self.out = Timeline()
        self._in_wait = False
        # heaters' total power while none of them changes by itself (all holding or cold), else None
        self._steady_heaters_w: float | None = None

    def hotend(self, tool: int) -> HeaterState:
        if tool not in self.hotends:
            self.hotends[tool] = HeaterState(self.profile.hotend, self.ambient_c, self.ambient_c)
            self._steady_heaters_w = None
        return self.hotends[tool]

    def total_s(self, motion_s: float) -> float:
        return self.t_s + (motion_s - self.motion_s)

    def wall_w(self, heaters_w: float | None = None) -> float:
        power = self.profile.power
        if heaters_w is None:
            heaters_w = self.bed.power_w() + sum(h.power_w() for h in self.hotends.values())
        hot = any(h.temp_c > HOTEND_FAN_ON_C for h in self.hotends.values())
        dc_w = (power.electronics_w + heaters_w + power.part_fan_w * self.fan
                + (power.steppers_w if self.steppers_on else 0.0) + (power.hotend_fan_w if hot else 0.0))
        return dc_w / power.psu_efficiency + power.psu_idle_w

    def _steady_w(self) -> float | None:
        heaters = [self.bed, *self.hotends.values()]
        if any(h.seconds_to_next_change() != math.inf for h in heaters):
            return None
        return sum(h.power_w() for h in heaters)

    def _run(self, dt_s: float) -> None:
        """Advance all heaters by dt_s, emitting a segment at each power breakpoint."""
        if self._steady_heaters_w is None:
            self._steady_heaters_w = self._steady_w()
        if self._steady_heaters_w is not None:  # fast path: nothing changes by itself
            if dt_s > 0:
                self._emit(self.t_s, self.t_s + dt_s, self.wall_w(self._steady_heaters_w))
                self.t_s += dt_s
            return
        remaining = dt_s
        heaters = [self.bed, *self.hotends.values()]
        while remaining > 1e-9:
            step = remaining
            for heater in heaters:
                change_s = heater.seconds_to_next_change()
                if change_s < step:
                    step = change_s
            step = max(step, min(remaining, 1e-6))
            watts = self.wall_w()
            self._emit(self.t_s, self.t_s + step, watts)
            for heater in heaters:
                heater.advance(step)
            self.t_s += step
            remaining -= step
        self._steady_heaters_w = self._steady_w()

    def _emit(self, t0_s: float, t1_s: float, watts: float) -> None:
        if t1_s > self.MAX_TOTAL_S:
            raise TimelineTooLong(f"print longer than {self.MAX_TOTAL_S / 86400:.0f} days with its heat-up waits")
        wh = watts * (t1_s - t0_s) / 3600.0
        self.out.energy_wh += wh
        if self._in_wait:
            self.out.heatup_wh += wh
        self.out.peak_w = max(self.out.peak_w, watts)
        bins = self.out.minute_j
        t = t0_s
        while t < t1_s:
            minute = int(t // 60.0)
            while len(bins) <= minute:
                bins.append(0.0)
            edge = min(t1_s, (minute + 1) * 60.0)
            if edge <= t:  # rounding at a minute edge
                edge = min(t1_s, t + 1e-9)
            bins[minute] += watts * (edge - t)
            t = edge

    def advance_to(self, motion_s: float) -> None:
        if motion_s > self.motion_s:
            self._run(motion_s - self.motion_s)
            self.motion_s = motion_s

    def _target(self, heater: HeaterState, target_c: float, label: str) -> None:
        if not math.isfinite(target_c) or target_c < 0:
            self.out.warnings.append(f"{label} target {target_c!r} ignored")
            return
        if target_c > heater.model.max_c:
            self.out.warnings.append(f"{label} target {target_c:.0f} C above the profile's max {heater.model.max_c:.0f} C;"
                                     " clamped")
            target_c = heater.model.max_c
        heater.target_c = target_c
        self._steady_heaters_w = None

    def wait(self, heater: HeaterState, also_cooling: bool, label: str) -> None:
        wait_s = heater.wait_s(also_cooling)
        if wait_s == math.inf or wait_s > self.MAX_WAIT_S:
            self.out.warnings.append(f"{label} wait for {heater.target_c:.0f} C cannot finish in the thermal model "
                                     f"at {self.ambient_c:.0f} C ambient; counted as {self.MAX_WAIT_S:.0f} s")
            wait_s = self.MAX_WAIT_S
        if wait_s > 0:
            self._in_wait = True
            self._run(wait_s)
            self._in_wait = False
            self.out.heatup_s += wait_s

    def set_hotend(self, tool: int, target_c: float) -> None:
        self._target(self.hotend(tool), target_c, f"hotend T{tool}")
        self.out.max_hotend_c = max(self.out.max_hotend_c, self.hotend(tool).target_c)

    def set_bed(self, target_c: float) -> None:
        self._target(self.bed, target_c, "bed")
        self.out.max_bed_c = max(self.out.max_bed_c, self.bed.target_c)


def per_minute(minute_j: Sequence[float], end_s: float) -> list[list[float]]:
    """Mean wall power per minute, ``[[minute_start_s, watts], ...]`` (last minute: its own length)."""
    n_minutes = math.ceil(end_s / 60.0 - 1e-9) if end_s > 0 else 0
    out = []
    for minute in range(n_minutes):
        joules = minute_j[minute] if minute < len(minute_j) else 0.0
        if minute == n_minutes - 1 and len(minute_j) > n_minutes:  # rounding spill past the end
            joules += sum(minute_j[n_minutes:])
        length_s = min(60.0, end_s - minute * 60.0)
        out.append([minute * 60.0, round(joules / length_s, 3) if length_s > 0 else 0.0])
    return out
