"""INA219/INA226: the calibration math against a register-level chip model."""
from __future__ import annotations

import pytest

from node.power.config import InaSection
from node.power.sources import SourceError
from node.power.sources.ina import (
    REG_CALIBRATION,
    REG_CONFIG,
    Calibration,
    InaSource,
    SimulatedI2CBus,
    SimulatedInaChip,
)


def test_ina219_calibration_matches_the_datasheet_example() -> None:
    # SBOS448 section 8.5.1: 0.1 ohm shunt, 2 A max -> current_LSB ~ 61 uA; with the rounded
    # 100 uA LSB of the example, Cal = trunc(0.04096 / (0.0001 * 0.1)) = 4096.
    assert int(0.04096 / (0.0001 * 0.1)) == 4096
    cal = Calibration("ina219", 0.05, 3.2768)  # 3.2768 A / 2**15 = exactly 100 uA
    assert cal.cal == 8192
    assert cal.current_lsb_a == pytest.approx(100e-6)
    assert cal.power_lsb_w == pytest.approx(2e-3)
    assert cal.shunt_range_v == 0.320  # 163.84 mV is above the /4 range's 160 mV


def test_ina226_calibration_matches_the_datasheet_formula() -> None:
    # SBOS547 equation 1: CAL = 0.00512 / (current_LSB * R_shunt)
    cal = Calibration("ina226", 0.002, 16.384)  # 16.384 A / 2**15 = 0.5 mA
    assert cal.cal == 5120
    assert cal.current_lsb_a == pytest.approx(0.5e-3)
    assert cal.power_lsb_w == pytest.approx(12.5e-3)


@pytest.mark.parametrize("chip", ["ina219", "ina226"])
@pytest.mark.parametrize("current_a,bus_v", [(-37.5, 12.9), (0.0, 13.3), (12.25, 14.1), (99.0, 13.6)])
def test_readings_through_the_chip_model(chip: str, current_a: float, bus_v: float) -> None:
    section = InaSection(chip=chip, address=0x41, shunt_ohm=0.00075, max_current_a=100.0)
    chip_model = SimulatedInaChip(chip, section.shunt_ohm, lambda: (current_a, bus_v))
    source = InaSource(section, bus=SimulatedI2CBus({0x41: chip_model}))
    source.open()
    reading = source.read(1.0)
    source.close()
    cal = source.calibration
    shunt_lsb_a = cal.shunt_lsb_v / section.shunt_ohm  # the shunt ADC's resolution in amperes
    assert chip_model.registers[REG_CALIBRATION] == cal.cal
    assert chip_model.registers[REG_CONFIG] == cal.config
    assert reading.battery_a == pytest.approx(current_a, abs=shunt_lsb_a + cal.current_lsb_a)
    assert reading.battery_v == pytest.approx(bus_v, abs=cal.bus_lsb_v)
    assert reading.extra["power_w"] == pytest.approx(abs(current_a) * bus_v, abs=0.01 * abs(current_a) * bus_v + 2 * cal.power_lsb_w)


def test_printer_role_reports_printer_watts() -> None:
    section = InaSection(chip="ina219", shunt_ohm=0.01, max_current_a=20.0)
    bus = SimulatedI2CBus({0x40: SimulatedInaChip("ina219", 0.01, lambda: (9.5, 12.0))})
    source = InaSource(section, role="printer", bus=bus)
    source.open()
    reading = source.read(1.0)
    assert reading.battery_v is None and reading.printer_w == pytest.approx(114.0, rel=0.01)


def test_range_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="above the 81.92 mV range"):
        Calibration("ina226", 0.001, 100.0)
    with pytest.raises(ValueError, match="above the 320 mV range"):
        Calibration("ina219", 0.1, 5.0)


def test_missing_chip_wrong_chip_and_lost_calibration() -> None:
    section = InaSection(chip="ina226", address=0x40)
    with pytest.raises(SourceError, match="no acknowledge"):
        InaSource(section, bus=SimulatedI2CBus({})).open()
    impostor = SimulatedInaChip("ina219", section.shunt_ohm, lambda: (1.0, 13.0))  # no manufacturer id
    with pytest.raises(SourceError, match="expected 0x5449"):
        InaSource(section, bus=SimulatedI2CBus({0x40: impostor})).open()
    chip = SimulatedInaChip("ina226", section.shunt_ohm, lambda: (1.0, 13.0))
    source = InaSource(section, bus=SimulatedI2CBus({0x40: chip}))
    source.open()
    chip.write(REG_CONFIG, 0x8000)  # a brown-out reset
    with pytest.raises(SourceError, match="lost its calibration"):
        source.read(1.0)
    assert source.counters() == {"reads_ok": 0, "i2c_errors": 1}
