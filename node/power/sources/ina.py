"""INA219 / INA226 current-shunt monitors on I2C, with the datasheet calibration math.

Register facts (Texas Instruments datasheets SBOS448 "INA219" and SBOS547 "INA226"):

============  ===============================  ================================
register      INA219                           INA226
============  ===============================  ================================
0x00 config   BRNG bit 13, PGA bits 12-11      AVG 11-9, VBUSCT 8-6, VSHCT 5-3
0x01 shunt    signed, LSB 10 uV (PGA /1..8:    signed, LSB 2.5 uV, +-81.92 mV
              +-40..320 mV)
0x02 bus      bits 15-3, LSB 4 mV; bit 1 CNVR,  bits 14-0, LSB 1.25 mV
              bit 0 OVF (math overflow)
0x03 power    LSB = 20 x current_LSB           LSB = 25 x current_LSB
0x04 current  signed, LSB = current_LSB        signed, LSB = current_LSB
0x05 calib.   trunc(0.04096 / (current_LSB     trunc(0.00512 / (current_LSB
              x R_shunt)), bit 0 unused        x R_shunt)), 15 bits
chip maths    current = shunt x CAL / 4096     current = shunt x CAL / 2048
              power = current x bus / 5000     power = current x bus / 20000
IDs           none                             0xFE = 0x5449 (TI), 0xFF = 0x2260
============  ===============================  ================================

``current_LSB = max_current / 2**15`` (the current register's signed 15-bit range), then
the effective LSB after truncating CAL is recomputed so readings carry no scale error.

Registers are big-endian on the wire; SMBus word transfers are little-endian, so the
real backend uses 2-byte block transfers.  The real backend (smbus2) is imported only
when used; off a Pi a register-level simulated chip stands in.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Literal, Protocol

from node.power.config import InaSection
from node.power.sources import Reading, SourceError

log = logging.getLogger(__name__)

Chip = Literal["ina219", "ina226"]
REG_CONFIG, REG_SHUNT, REG_BUS, REG_POWER, REG_CURRENT, REG_CALIBRATION = range(6)
REG_MANUFACTURER, REG_DIE = 0xFE, 0xFF


class I2CBus(Protocol):
    """The narrow interface the driver needs (16-bit big-endian registers)."""

    def read_register(self, address: int, register: int) -> int: ...

    def write_register(self, address: int, register: int, value: int) -> None: ...

    def close(self) -> None: ...


def _signed16(value: int) -> int:
    return value - 0x10000 if value & 0x8000 else value


class Calibration:
    """What the driver writes to CAL and how it scales the result registers."""

    def __init__(self, chip: Chip, shunt_ohm: float, max_current_a: float) -> None:
        self.chip = chip
        self.shunt_ohm = shunt_ohm
        self.max_current_a = max_current_a
        shunt_full_scale_v = max_current_a * shunt_ohm
        if chip == "ina219":
            self.shunt_lsb_v, self.bus_lsb_v = 10e-6, 4e-3
            ranges = [(0.040, 0b00), (0.080, 0b01), (0.160, 0b10), (0.320, 0b11)]
            fitting = [r for r in ranges if r[0] >= shunt_full_scale_v]
            if not fitting:
                raise ValueError(f"INA219: {max_current_a} A through {shunt_ohm} ohm is "
                                 f"{shunt_full_scale_v * 1000:.0f} mV, above the 320 mV range")
            self.shunt_range_v, pga = fitting[0]
            # 32 V bus range, PGA for the shunt, 12-bit ADCs, shunt and bus continuous
            self.config = (1 << 13) | (pga << 11) | (0b0011 << 7) | (0b0011 << 3) | 0b111
            cal_numerator, self.power_lsb_factor, self.current_divisor = 0.04096, 20.0, 4096
        else:
            self.shunt_lsb_v, self.bus_lsb_v = 2.5e-6, 1.25e-3
            self.shunt_range_v = 0.08192
            if shunt_full_scale_v > self.shunt_range_v:
                raise ValueError(f"INA226: {max_current_a} A through {shunt_ohm} ohm is "
                                 f"{shunt_full_scale_v * 1000:.1f} mV, above the 81.92 mV range")
            # average 16 samples, 1.1 ms conversions, shunt and bus continuous
            self.config = (0b010 << 9) | (0b100 << 6) | (0b100 << 3) | 0b111
            cal_numerator, self.power_lsb_factor, self.current_divisor = 0.00512, 25.0, 2048
        wanted_lsb_a = max_current_a / 32768.0
        cal = math.trunc(cal_numerator / (wanted_lsb_a * shunt_ohm))
        cal = min(cal, 0xFFFE if chip == "ina219" else 0x7FFF)
        if chip == "ina219":
            cal &= 0xFFFE  # bit 0 is not used
        if cal < 1:
            raise ValueError(f"{chip}: calibration rounds to 0 (shunt {shunt_ohm} ohm too large for "
                             f"{max_current_a} A)")
        self.cal = cal
        self.current_lsb_a = cal_numerator / (cal * shunt_ohm)  # effective, after truncation
        self.power_lsb_w = self.power_lsb_factor * self.current_lsb_a


class InaDriver:
    """Configure, calibrate and read one chip."""

    def __init__(self, bus: I2CBus, address: int, calibration: Calibration) -> None:
        self.bus = bus
        self.address = address
        self.cal = calibration

    def configure(self) -> None:
        if self.cal.chip == "ina226":
            maker = self.bus.read_register(self.address, REG_MANUFACTURER)
            if maker != 0x5449:
                raise SourceError(f"no INA226 at 0x{self.address:02x}: manufacturer id 0x{maker:04x}, "
                                  "expected 0x5449")
        self.bus.write_register(self.address, REG_CONFIG, self.cal.config)
        self.bus.write_register(self.address, REG_CALIBRATION, self.cal.cal)

    def read(self) -> tuple[float, float, float, float]:
        """(bus_v, current_a, power_w, shunt_v)."""
        bus_raw = self.bus.read_register(self.address, REG_BUS)
        if self.cal.chip == "ina219":
            if bus_raw & 0x1:
                raise SourceError("INA219 math overflow: current or power beyond the calibrated range")
            bus_v = (bus_raw >> 3) * self.cal.bus_lsb_v
        else:
            bus_v = (bus_raw & 0x7FFF) * self.cal.bus_lsb_v
        shunt_v = _signed16(self.bus.read_register(self.address, REG_SHUNT)) * self.cal.shunt_lsb_v
        current_a = _signed16(self.bus.read_register(self.address, REG_CURRENT)) * self.cal.current_lsb_a
        power_w = self.bus.read_register(self.address, REG_POWER) * self.cal.power_lsb_w
        if self.bus.read_register(self.address, REG_CALIBRATION) != self.cal.cal:
            # a brown-out resets the chip to CAL = 0: its current register then reads 0
            raise SourceError(f"{self.cal.chip} at 0x{self.address:02x} lost its calibration (reset?)")
        return bus_v, current_a, power_w, shunt_v


# --- backends --------------------------------------------------------------------------------

class SMBus2Bus:
    """The real I2C bus (``/dev/i2c-N``) through smbus2, imported only here."""

    def __init__(self, bus_number: int) -> None:
        try:
            from smbus2 import SMBus
        except ImportError as exc:
            raise SourceError(f"smbus2 is not installed: {exc}") from None
        try:
            self._bus = SMBus(bus_number)
        except (OSError, FileNotFoundError) as exc:
            raise SourceError(f"cannot open /dev/i2c-{bus_number}: {exc}") from None

    def read_register(self, address: int, register: int) -> int:
        try:
            high, low = self._bus.read_i2c_block_data(address, register, 2)
        except OSError as exc:
            raise SourceError(f"I2C read 0x{address:02x}/0x{register:02x}: {exc}") from None
        return (high << 8) | low

    def write_register(self, address: int, register: int, value: int) -> None:
        try:
            self._bus.write_i2c_block_data(address, register, [(value >> 8) & 0xFF, value & 0xFF])
        except OSError as exc:
            raise SourceError(f"I2C write 0x{address:02x}/0x{register:02x}: {exc}") from None

    def close(self) -> None:
        self._bus.close()


class SimulatedInaChip:
    """A register-level model of one chip: it digitizes a true current and bus voltage
    and derives its current and power registers from CAL exactly as the datasheet says."""

    def __init__(self, chip: Chip, shunt_ohm: float, true_state: Callable[[], tuple[float, float]]) -> None:
        self.chip = chip
        self.shunt_ohm = shunt_ohm
        self.true_state = true_state  # () -> (current_a, bus_v)
        self.registers = {REG_CONFIG: 0x399F if chip == "ina219" else 0x4127, REG_CALIBRATION: 0,
                          REG_MANUFACTURER: 0x5449 if chip == "ina226" else 0, REG_DIE: 0x2260 if chip == "ina226" else 0}

    def read(self, register: int) -> int:
        if register in (REG_CONFIG, REG_CALIBRATION, REG_MANUFACTURER, REG_DIE):
            return self.registers[register]
        current_a, bus_v = self.true_state()
        shunt_lsb, bus_lsb = (10e-6, 4e-3) if self.chip == "ina219" else (2.5e-6, 1.25e-3)
        full_scale = 32000 if self.chip == "ina219" else 32767
        shunt_raw = max(-full_scale, min(full_scale, round(current_a * self.shunt_ohm / shunt_lsb)))
        bus_raw = max(0, min(0x7FFF if self.chip == "ina226" else 0x1FFF, round(bus_v / bus_lsb)))
        cal = self.registers[REG_CALIBRATION]
        divisor, power_divisor = (4096, 5000) if self.chip == "ina219" else (2048, 20000)
        current_raw = int(shunt_raw * cal / divisor)
        power_raw = abs(int(current_raw * bus_raw / power_divisor))
        if register == REG_SHUNT:
            return shunt_raw & 0xFFFF
        if register == REG_BUS:
            return (bus_raw << 3) | 0b10 if self.chip == "ina219" else bus_raw
        if register == REG_CURRENT:
            return max(-32768, min(32767, current_raw)) & 0xFFFF
        if register == REG_POWER:
            return min(0xFFFF, power_raw)
        raise SourceError(f"simulated {self.chip}: no register 0x{register:02x}")

    def write(self, register: int, value: int) -> None:
        if register == REG_CONFIG and value & 0x8000:
            self.registers[REG_CALIBRATION] = 0  # reset
            return
        if register not in (REG_CONFIG, REG_CALIBRATION):
            raise SourceError(f"simulated {self.chip}: register 0x{register:02x} is read-only")
        self.registers[register] = value & 0xFFFF


class SimulatedI2CBus:
    """Chips by address; a missing address NAKs like a real bus."""

    def __init__(self, chips: dict[int, SimulatedInaChip]) -> None:
        self.chips = chips

    def _chip(self, address: int) -> SimulatedInaChip:
        if address not in self.chips:
            raise SourceError(f"I2C address 0x{address:02x}: no acknowledge (nothing there)")
        return self.chips[address]

    def read_register(self, address: int, register: int) -> int:
        return self._chip(address).read(register)

    def write_register(self, address: int, register: int, value: int) -> None:
        self._chip(address).write(register, value)

    def close(self) -> None:
        pass


def demo_battery_state() -> tuple[float, float]:
    """What the off-Pi simulated chip measures: a 12.8 V bank slowly cycling +-4 A."""
    t = time.monotonic()
    current_a = 4.0 * math.sin(t / 120.0)
    return current_a, 13.1 + current_a * 0.02


# --- the source ------------------------------------------------------------------------------

class InaSource:
    """A shunt on the battery (``role="battery"``) or on the printer's feed (``role="printer"``)."""

    def __init__(self, section: InaSection, role: Literal["battery", "printer"] = "battery",
                 bus: I2CBus | None = None) -> None:
        self.section = section
        self.role = role
        self.name = section.chip
        self.calibration = Calibration(section.chip, section.shunt_ohm, section.max_current_a)
        self._given_bus = bus
        self._bus: I2CBus | None = None
        self._driver: InaDriver | None = None
        self._counters = {"reads_ok": 0, "i2c_errors": 0}

    def _make_bus(self) -> I2CBus:
        if self._given_bus is not None:
            return self._given_bus
        backend = self.section.backend
        if backend == "auto":
            backend = "smbus2" if os.path.exists(f"/dev/i2c-{self.section.bus}") else "simulated"
            if backend == "simulated":
                log.warning("no /dev/i2c-%d: using a simulated %s", self.section.bus, self.section.chip)
        if backend == "smbus2":
            return SMBus2Bus(self.section.bus)
        chip = SimulatedInaChip(self.section.chip, self.section.shunt_ohm, demo_battery_state)
        return SimulatedI2CBus({self.section.address: chip})

    def open(self) -> None:
        self._bus = self._make_bus()
        self._driver = InaDriver(self._bus, self.section.address, self.calibration)
        try:
            self._driver.configure()
        except SourceError:
            self._counters["i2c_errors"] += 1
            raise

    def read(self, timeout_s: float) -> Reading | None:
        if self._driver is None:
            raise SourceError(f"{self.name} is not open")
        try:
            bus_v, current_a, power_w, shunt_v = self._driver.read()
        except SourceError:
            self._counters["i2c_errors"] += 1
            raise
        self._counters["reads_ok"] += 1
        extra = {"shunt_v": shunt_v, "power_w": power_w, "current_a": current_a, "bus_v": bus_v}
        if self.role == "printer":
            return Reading(source=self.name, printer_w=power_w, extra=extra)
        return Reading(source=self.name, battery_v=bus_v, battery_a=current_a, extra=extra)

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def close(self) -> None:
        if self._bus is not None and self._given_bus is None:
            self._bus.close()
        self._bus = None
        self._driver = None
