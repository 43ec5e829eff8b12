"""The sample job: a small square tube the project generates itself.

Queued by the default config so ``make run`` prints something end to end.
It is a real print for the profile's bed: heat-up with waits, homing, a
purge line, ``layers`` layers of two perimeters, and an end script.
"""
from __future__ import annotations

from node.printer.profile import PrinterProfile

SAMPLE_NAME = "sample-square-tube.gcode"


def _extrusion_mm(length_mm: float, layer_mm: float, width_mm: float, filament_mm: float) -> float:
    """Filament length for a bead of ``length`` x ``width`` x ``layer`` (volume conservation)."""
    area = 3.141592653589793 * (filament_mm / 2) ** 2
    return length_mm * layer_mm * width_mm / area


def sample_gcode(profile: PrinterProfile, layers: int = 40, size_mm: float = 20.0,
                 layer_mm: float = 0.2, hotend_c: float = 205.0, bed_c: float = 60.0) -> str:
    cx, cy = profile.bed_x_mm / 2, profile.bed_y_mm / 2
    width = profile.nozzle_mm * 1.1
    lines = [
        "; printnode sample job: square tube",
        f"; printer profile: {profile.name}, {layers} layers of {layer_mm} mm",
        "M140 S%g" % bed_c, "M104 S%g" % hotend_c, "M190 S%g" % bed_c, "M109 S%g" % hotend_c,
        "G28", "G90", "M82", "G92 E0",
        "G1 Z0.3 F600", "G1 X10 Y10 F6000",
        "G1 X10 Y%.1f E%.4f F1200" % (cy, _extrusion_mm(cy - 10, 0.3, 0.8, profile.filament_mm)),
        "G92 E0", "M106 S255",
    ]
    e = 0.0
    for layer in range(layers):
        z = layer_mm * (layer + 1)
        lines.append(f";LAYER:{layer}")
        lines.append("G1 Z%.2f F600" % z)
        for loop in range(2):
            half = size_mm / 2 - loop * width
            corners = [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half),
                       (cx - half, cy + half), (cx - half, cy - half)]
            lines.append("G1 X%.3f Y%.3f F6000" % corners[0])
            for (x0, y0), (x1, y1) in zip(corners, corners[1:], strict=False):
                e += _extrusion_mm(abs(x1 - x0) + abs(y1 - y0), layer_mm, width, profile.filament_mm)
                lines.append("G1 X%.3f Y%.3f E%.5f F1800" % (x1, y1, e))
        lines.append("M117 layer %d/%d" % (layer + 1, layers))
    lines += ["M107", "M104 S0", "M140 S0", "G91", "G1 Z10 F600", "G90",
              "G1 X0 Y%.1f F6000" % profile.bed_y_mm, "M84", "; end of sample job"]
    return "\n".join(lines) + "\n"


def sample_job(profile: PrinterProfile, index: int = 0) -> tuple[str, str]:
    """Sample part ``index`` as (name, G-code): 0 is the small tube, each next one taller and wider,
    so a queue of them is a day's mix of short and long prints."""
    if index == 0:
        return SAMPLE_NAME, sample_gcode(profile)
    size_mm, layers = min(20.0 + 15.0 * index, profile.bed_x_mm - 30), 40 * (1 + 2 * index)
    return (f"sample-square-tube-{size_mm:.0f}mm-{layers}-layers.gcode",
            sample_gcode(profile, layers=layers, size_mm=size_mm))
