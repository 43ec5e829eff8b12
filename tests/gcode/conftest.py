"""Helpers for the G-code analysis tests: every test writes its own G-code."""
from __future__ import annotations

from pathlib import Path

import pytest

from node.printer.profile import PrinterProfile, load_profile


def square_layers(n_layers: int, size_mm: float = 20.0, feed_mm_min: float = 1800.0, layer_mm: float = 0.2,
                  loops_per_layer: int = 1, start_z_mm: float = 0.2) -> str:
    """A small print: per layer a travel up, then square loops extruded in relative E."""
    lines = ["M83", "G90"]
    e_per_mm = 0.033
    for layer in range(n_layers):
        z = start_z_mm + layer * layer_mm
        lines.append(f"G1 Z{z:.3f} F600")
        lines.append(f"G0 X10 Y10 F6000")
        for _ in range(loops_per_layer):
            for x, y in ((10 + size_mm, 10), (10 + size_mm, 10 + size_mm), (10, 10 + size_mm), (10, 10)):
                lines.append(f"G1 X{x:.3f} Y{y:.3f} E{size_mm * e_per_mm:.5f} F{feed_mm_min:.0f}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def write(tmp_path: Path):
    counter = iter(range(10_000))

    def _write(text: str | bytes, name: str | None = None) -> Path:
        path = tmp_path / (name or f"f{next(counter)}.gcode")
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path

    return _write


@pytest.fixture
def ender3() -> PrinterProfile:
    return load_profile("ender3")
