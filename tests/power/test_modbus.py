"""EPEVER and Renogy sources against a Modbus RTU slave simulator on a real pseudo-terminal."""
from __future__ import annotations

import pytest

from node.power.sources import SourceError
from node.power.sources.modbus import ModbusSource
from tests.power.modbus_slave import ModbusSlave, crc16


def u32_words(value: int) -> tuple[int, int]:
    """(low, high) words of a 32-bit value (EPEVER order)."""
    value &= 0xFFFF_FFFF
    return value & 0xFFFF, value >> 16


def epever_registers() -> dict[int, int]:
    regs = {a: 0 for a in list(range(0x3100, 0x3114)) + list(range(0x311A, 0x311E)) + list(range(0x3200, 0x3203))
            + list(range(0x3300, 0x3314)) + list(range(0x331A, 0x331D))}
    regs[0x3100] = 3542                      # PV 35.42 V
    regs[0x3101] = 812                       # PV 8.12 A
    regs[0x3102], regs[0x3103] = u32_words(28761)   # PV 287.61 W
    regs[0x3104] = 1334                      # battery 13.34 V
    regs[0x3105] = 2050                      # charge 20.50 A
    regs[0x3106], regs[0x3107] = u32_words(27347)
    regs[0x310C], regs[0x310D] = 1330, 150   # load 13.30 V 1.50 A
    regs[0x310E], regs[0x310F] = u32_words(1995)
    regs[0x3110] = (-512) & 0xFFFF           # battery -5.12 C
    regs[0x3111] = 3120                      # device 31.20 C
    regs[0x3112] = 2950
    regs[0x311A] = 76                        # SOC 76 %
    regs[0x311B] = 1800
    regs[0x311D] = 1200                      # 12 V system
    regs[0x3200] = 0x0000                    # battery normal
    regs[0x3201] = 0b1001                    # running, charging status 2 = boost
    regs[0x3202] = 0x0001                    # load output on
    regs[0x3300], regs[0x3301], regs[0x3302], regs[0x3303] = 4010, 120, 1420, 1250
    regs[0x3304], regs[0x3305] = u32_words(34)
    regs[0x330A], regs[0x330B] = u32_words(70001)
    regs[0x330C], regs[0x330D] = u32_words(123)
    regs[0x3312], regs[0x3313] = u32_words(123456)
    regs[0x331A] = 1334
    regs[0x331B], regs[0x331C] = u32_words(-1877 + 2 ** 32)  # keep sign through u32
    return regs


def renogy_registers() -> dict[int, int]:
    regs = {a: 0 for a in range(0x0100, 0x0123)}
    regs.update({
        0x0100: 64, 0x0101: 128, 0x0102: 1025, 0x0103: (35 << 8) | 0x80 | 7, 0x0104: 128, 0x0105: 250,
        0x0106: 32, 0x0107: 365, 0x0108: 390, 0x0109: 142, 0x010B: 121, 0x010C: 143, 0x010D: 1500,
        0x010E: 900, 0x010F: 210, 0x0110: 120, 0x0111: 31, 0x0112: 12, 0x0113: 4321, 0x0114: 1234,
        0x0115: 400, 0x0116: 3, 0x0117: 250, 0x0118: 1, 0x0119: 5, 0x011A: 0, 0x011B: 40000, 0x011C: 2,
        0x011D: 10, 0x011E: 0, 0x011F: 9999, 0x0120: 0x8000 | (40 << 8) | 4, 0x0121: 0x0004, 0x0122: 0,
    })
    return regs


@pytest.fixture
def slave_factory(pty_pair):
    slaves = []

    def make(function_code: int, registers: dict[int, int], unit: int = 1) -> ModbusSlave:
        slave = ModbusSlave(pty_pair.master_fd, unit, function_code, registers).start()
        slaves.append(slave)
        return slave

    yield make
    for slave in slaves:
        slave.stop()


def test_crc_matches_the_specification_example() -> None:
    # Modbus over Serial Line V1.02, section 6.2.2: frame 02 07 -> CRC 0x1241 (sent 41 12)
    assert crc16(bytes([0x02, 0x07])) == 0x1241


def test_epever_tracer_input_registers(pty_pair, slave_factory) -> None:
    slave_factory(4, epever_registers())
    source = ModbusSource("epever", pty_pair.slave_name)
    source.open()
    try:
        reading = source.read(timeout_s=1)
    finally:
        source.close()
    assert reading.source == "epever"
    assert reading.pv_v == pytest.approx(35.42)
    assert reading.pv_w == pytest.approx(287.61)
    assert reading.battery_v == pytest.approx(13.34)
    assert reading.battery_a == pytest.approx(-18.77)
    assert reading.battery_temperature_c == pytest.approx(-5.12)
    assert reading.load_w == pytest.approx(19.95)
    assert reading.soc_pct == 76
    assert reading.charge_state == "boost"
    assert reading.error is None
    extra = reading.extra
    assert extra["pv_a"] == pytest.approx(8.12)
    assert extra["charge_a"] == pytest.approx(20.5)
    assert extra["charge_w"] == pytest.approx(273.47)
    assert (extra["load_v"], extra["load_a"]) == (pytest.approx(13.3), pytest.approx(1.5))
    assert extra["device_temperature_c"] == pytest.approx(31.2)
    assert extra["remote_battery_temperature_c"] == pytest.approx(18.0)
    assert extra["battery_rated_v"] == pytest.approx(12.0)
    assert extra["load_on"] is True
    assert extra["max_pv_v_today"] == pytest.approx(40.1)
    assert extra["min_battery_v_today"] == pytest.approx(12.5)
    assert extra["consumed_total_kwh"] == pytest.approx(700.01)
    assert extra["generated_today_kwh"] == pytest.approx(1.23)
    assert extra["generated_total_kwh"] == pytest.approx(1234.56)
    assert source.counters() == {"polls_ok": 1, "modbus_errors": 0}


def test_epever_faults_are_reported(pty_pair, slave_factory) -> None:
    regs = epever_registers()
    regs[0x3200] = 0x0003 | 0x0010           # low voltage disconnect, over temperature
    regs[0x3201] = 0x0001 | (1 << 2) | (1 << 8) | (2 << 14)
    slave_factory(4, regs)
    source = ModbusSource("epever", pty_pair.slave_name)
    source.open()
    try:
        reading = source.read(timeout_s=1)
    finally:
        source.close()
    assert reading.charge_state == "float"
    assert reading.error == ("battery low voltage disconnect; battery over temperature; load short; "
                             "PV input voltage too high")


def test_renogy_rover_holding_registers(pty_pair, slave_factory) -> None:
    slave_factory(3, renogy_registers())
    source = ModbusSource("renogy", pty_pair.slave_name)
    source.open()
    try:
        reading = source.read(timeout_s=1)
    finally:
        source.close()
    assert reading.soc_pct == 64
    assert reading.battery_v == pytest.approx(12.8)
    assert reading.battery_a == pytest.approx(10.25 - 2.5)
    assert reading.battery_temperature_c == -7
    assert reading.load_w == 32
    assert reading.pv_v == pytest.approx(36.5)
    assert reading.pv_w == 142
    assert reading.charge_state == "boost"
    assert reading.error == "battery under-voltage warning"
    extra = reading.extra
    assert extra["controller_temperature_c"] == 35
    assert extra["pv_a"] == pytest.approx(3.9)
    assert extra["load_v"] == pytest.approx(12.8)
    assert extra["min_battery_v_today"] == pytest.approx(12.1)
    assert extra["max_charge_a_today"] == pytest.approx(15.0)
    assert extra["charge_ah_today"] == 31
    assert extra["generated_today_kwh"] == pytest.approx(0.4321)
    assert extra["operating_days"] == 400
    assert extra["full_charges"] == 250
    assert extra["charge_ah_total"] == (1 << 16) + 5
    assert extra["discharge_ah_total"] == 40000
    assert extra["generated_total_kwh"] == pytest.approx(((2 << 16) + 10) / 10000)
    assert extra["load_on"] is True
    assert extra["load_brightness_pct"] == 40


def test_silent_unit_and_corrupt_replies_raise_source_error(pty_pair, slave_factory) -> None:
    slave = slave_factory(3, renogy_registers(), unit=7)
    source = ModbusSource("renogy", pty_pair.slave_name, unit=1, reply_timeout_s=0.2)
    source.open()
    try:
        with pytest.raises(SourceError, match="renogy unit 1"):
            source.read(timeout_s=1)
        source.unit = 7
        source._instrument.address = 7
        slave.corrupt_replies = True
        with pytest.raises(SourceError, match="(?i)checksum|crc"):
            source.read(timeout_s=1)
        slave.corrupt_replies = False
        assert source.read(timeout_s=1).soc_pct == 64
    finally:
        source.close()
    assert source.counters() == {"polls_ok": 1, "modbus_errors": 2}


def test_unmapped_register_is_an_error_naming_the_block(pty_pair, slave_factory) -> None:
    regs = epever_registers()
    del regs[0x3312]
    slave_factory(4, regs)
    source = ModbusSource("epever", pty_pair.slave_name, reply_timeout_s=0.3)
    source.open()
    try:
        with pytest.raises(SourceError, match="0x3300"):
            source.read(timeout_s=1)
    finally:
        source.close()
