"""The default job stream of ``printnode simulate``: real prints, their energy profiles, a seeded order.

Each job is one of the real slicer files analysed by ``bench/derive_jobstream.py``
(numbers in :mod:`node.study.jobstream_data`).  Its energy profile is built from
those numbers and the printer profile's thermal and power model
(:mod:`node.printer.profile`):

1. heat the bed from ambient to its target at full power (``M190``), then the
   hotend (``M109``) with the bed holding — times from the first-order
   heater model;
2. print for the slicer's own time estimate, the heaters holding their targets
   (holding power = loss coefficient x temperature rise), motors on, part
   fan at 100 %, hotend fan on.

Every watt passes through the supply's efficiency, plus its idle draw.  This is
the "simple estimate from the slicer's own time estimates and the printer
profile's power model" the issue allows until ``node.gcode.analysis`` lands
(then re-derive the durations from it).  Layer times are the print time split
evenly over the layers (the simulation pauses at layer boundaries).
"""
from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

from node.printer.profile import PrinterProfile
from node.study.jobstream_data import DERIVED_JOBS


@dataclass(frozen=True)
class JobTemplate:
    name: str
    print_s: float
    bed_c: float
    hotend_c: float
    layers: int


@dataclass
class SimJob:
    job_id: str
    name: str
    power_profile: list[list[float]]
    heatup_s: float
    print_s: float
    layers: int
    queued_s: float
    priority: int = 0
    deadline_s: float | None = None
    queue_seq: int = 0
    heatup_w: float = 0.0
    bed_c: float = 60.0

    @property
    def duration_s(self) -> float:
        return self.heatup_s + self.print_s

    @property
    def layer_s(self) -> float:
        return self.print_s / max(1, self.layers)

    @functools.cached_property
    def energy_wh(self) -> float:
        return sum(w for _, w in self.power_profile) * 60.0 / 3600.0


def default_templates() -> list[JobTemplate]:
    return [JobTemplate(name=str(row["file"]).removesuffix(".gcode"), print_s=float(row["slicer_estimate_s"]),
                        bed_c=float(row["bed_c"]), hotend_c=float(row["hotend_c"]), layers=int(row["layers"]))
            for row in DERIVED_JOBS]


def build_power_profile(template: JobTemplate, profile: PrinterProfile, ambient_c: float = 20.0
                        ) -> tuple[list[list[float]], float, float]:
    """Per-minute ``[t_s, watts]`` for one print; also its heat-up seconds and heat-up average watts."""
    bed_heat_s = profile.bed.heatup_s(ambient_c, template.bed_c, ambient_c) if template.bed_c > ambient_c else 0.0
    hotend_heat_s = profile.hotend.heatup_s(ambient_c, template.hotend_c, ambient_c)
    if math.isinf(bed_heat_s) or math.isinf(hotend_heat_s):
        raise ValueError(f"{template.name}: the {profile.name} profile cannot reach {template.bed_c}/{template.hotend_c} C")
    bed_hold_pwm = profile.bed.holding_w(template.bed_c, ambient_c) / profile.bed.heater_w
    hotend_hold_pwm = profile.hotend.holding_w(template.hotend_c, ambient_c) / profile.hotend.heater_w
    bed_phase_w = profile.electrical_w(0.0, 1.0, steppers_on=False, hotend_fan_on=False)
    hotend_phase_w = profile.electrical_w(1.0, bed_hold_pwm, steppers_on=False)
    print_w = profile.electrical_w(hotend_hold_pwm, bed_hold_pwm, part_fan=1.0)
    heatup_s = bed_heat_s + hotend_heat_s
    total_s = heatup_s + template.print_s
    samples: list[list[float]] = []
    for minute in range(math.ceil(total_s / 60.0)):
        t0, t1 = minute * 60.0, min(total_s, minute * 60.0 + 60.0)
        parts = ((0.0, bed_heat_s, bed_phase_w), (bed_heat_s, heatup_s, hotend_phase_w), (heatup_s, total_s, print_w))
        energy_ws = sum(max(0.0, min(t1, b) - max(t0, a)) * w for a, b, w in parts)
        samples.append([t0, round(energy_ws / 60.0, 2)])  # the last minute may be partial: averaged over 60 s
    heatup_energy_ws = bed_heat_s * bed_phase_w + hotend_heat_s * hotend_phase_w
    return samples, heatup_s, heatup_energy_ws / heatup_s if heatup_s > 0 else print_w


class JobStream:
    """An endless, seeded sequence of jobs drawn uniformly from the templates."""

    def __init__(self, profile: PrinterProfile, seed: int = 1, templates: list[JobTemplate] | None = None,
                 ambient_c: float = 20.0) -> None:
        self.profile = profile
        self.rng = random.Random(seed)
        self.templates = templates or default_templates()
        self._built = {t.name: build_power_profile(t, profile, ambient_c) for t in self.templates}
        self.count = 0

    def next_job(self, t_s: float) -> SimJob:
        template = self.rng.choice(self.templates)
        samples, heatup_s, heatup_w = self._built[template.name]
        self.count += 1
        return SimJob(job_id=f"sim{self.count:05d}", name=template.name, power_profile=samples,
                      heatup_s=heatup_s, print_s=template.print_s, layers=template.layers, queued_s=t_s,
                      queue_seq=self.count, heatup_w=heatup_w, bed_c=template.bed_c)
