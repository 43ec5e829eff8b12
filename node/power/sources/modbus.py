"""Modbus RTU charge controllers over RS-485: EPEVER Tracer and Renogy Rover.

Library: minimalmodbus (synchronous, pyserial-based, pure Python, stable for
years).  A blocking master fits the source model (one thread per source) better
than pymodbus's asyncio stack, and it is one small dependency.

Register maps (all registers 16-bit, values scaled integers):

EPEVER Tracer A/B/AN series — "LS-B/VS-B/Tracer-B/Tracer-A/iTracer/eTracer Series
Controller Communication Instruction" V2.5, input registers (function 0x04):
  0x3100 PV V /100, 0x3101 PV A /100, 0x3102-3 PV W /100 (low word first),
  0x3104 battery V /100, 0x3105 charge A /100, 0x3106-7 charge W /100,
  0x310C load V /100, 0x310D load A /100, 0x310E-F load W /100,
  0x3110 battery °C /100 (signed), 0x3111 device °C /100 (signed), 0x3112 power components °C,
  0x311A battery SOC %, 0x311B remote battery °C /100, 0x311D battery rated V /100,
  0x3200 battery status, 0x3201 charging equipment status (bits 3-2: 0 none, 1 float, 2 boost,
  3 equalize), 0x3202 discharging equipment status,
  0x3300.. statistics (0x330C-D generated today kWh /100, 0x3312-3 generated total kWh /100),
  0x331A battery V /100, 0x331B-C battery net current A /100 (signed 32-bit, + = charging).

Renogy Rover / Wanderer — "ROVER Modbus protocol" V1.7, holding registers (function 0x03):
  0x0100 SOC %, 0x0101 battery V /10, 0x0102 charge A /100, 0x0103 controller °C (high byte)
  and battery °C (low byte), each sign-magnitude (bit 7 = minus), 0x0104 load V /10,
  0x0105 load A /100, 0x0106 load W, 0x0107 PV V /10, 0x0108 PV A /100, 0x0109 charge W,
  0x010B..0x0110 daily min/max, 0x0111 charge Ah today, 0x0112 discharge Ah today,
  0x0113 generation today (kWh/10000), 0x0114 consumption today, 0x0115 operating days,
  0x0116 over-discharges, 0x0117 full charges, 0x0118-0x011F totals (high word first),
  0x0120 load on (bit 15) and charging state (low byte: 0 deactivated, 1 activated, 2 mppt,
  3 equalizing, 4 boost, 5 floating, 6 current limiting), 0x0121-0x0122 fault bits.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from node.power.sources import Reading, SourceError

log = logging.getLogger(__name__)


def _s16(value: int) -> int:
    return value - 0x10000 if value & 0x8000 else value


def _u32(low: int, high: int) -> int:
    return (high << 16) | low


def _s32(low: int, high: int) -> int:
    value = _u32(low, high)
    return value - 0x1_0000_0000 if value & 0x8000_0000 else value


def _sign_magnitude_8(value: int) -> int:
    return -(value & 0x7F) if value & 0x80 else value & 0x7F


# --- EPEVER ----------------------------------------------------------------------------------

EPEVER_BLOCKS: list[tuple[int, int]] = [(0x3100, 0x14), (0x311A, 4), (0x3200, 3), (0x3300, 0x14), (0x331A, 3)]
EPEVER_CHARGING = {0: "off", 1: "float", 2: "boost", 3: "equalize"}
EPEVER_BATTERY_VOLTAGE = {0: None, 1: "battery over voltage", 2: "battery under voltage",
                          3: "battery low voltage disconnect", 4: "battery fault"}
EPEVER_BATTERY_TEMP = {0: None, 1: "battery over temperature", 2: "battery low temperature"}
EPEVER_CHARGER_FAULT_BITS = {
    4: "PV input short", 7: "load MOSFET short", 8: "load short", 9: "load over current",
    10: "input over current", 11: "anti-reverse MOSFET short", 12: "charging or anti-reverse MOSFET short",
    13: "charging MOSFET short",
}
EPEVER_INPUT_VOLTAGE = {0: None, 1: "no PV input power", 2: "PV input voltage too high", 3: "PV input voltage error"}


def decode_epever(regs: dict[int, int]) -> Reading:
    """Registers (address -> raw value) of a Tracer -> Reading."""
    def r(addr: int) -> int:
        return regs[addr]

    battery_status, charger_status, discharger_status = r(0x3200), r(0x3201), r(0x3202)
    problems: list[str] = []
    for text in (EPEVER_BATTERY_VOLTAGE.get(battery_status & 0x0F, f"battery status {battery_status & 0x0F}"),
                 EPEVER_BATTERY_TEMP.get((battery_status >> 4) & 0x0F, "battery temperature status")):
        if text:
            problems.append(text)
    if battery_status & 0x100:
        problems.append("battery internal resistance abnormal")
    if battery_status & 0x8000:
        problems.append("rated voltage identification error")
    for bit, text in EPEVER_CHARGER_FAULT_BITS.items():
        if charger_status & (1 << bit):
            problems.append(text)
    input_state = EPEVER_INPUT_VOLTAGE[(charger_status >> 14) & 0x3]
    if input_state and input_state != "no PV input power":
        problems.append(input_state)
    if charger_status & 0x2:
        problems.append("charger fault")
    if discharger_status & 0x2:
        problems.append("load output fault")
    charge_state = EPEVER_CHARGING[(charger_status >> 2) & 0x3] if charger_status & 0x1 else "off"
    battery_v = r(0x3104) / 100
    return Reading(
        source="epever",
        pv_v=r(0x3100) / 100,
        pv_w=_u32(r(0x3102), r(0x3103)) / 100,
        battery_v=battery_v,
        battery_a=_s32(r(0x331B), r(0x331C)) / 100,
        battery_temperature_c=_s16(r(0x3110)) / 100,
        load_w=_u32(r(0x310E), r(0x310F)) / 100,
        soc_pct=float(r(0x311A)),
        charge_state=charge_state,
        error="; ".join(problems) or None,
        extra={
            "pv_a": r(0x3101) / 100,
            "charge_a": r(0x3105) / 100,
            "charge_w": _u32(r(0x3106), r(0x3107)) / 100,
            "load_v": r(0x310C) / 100,
            "load_a": r(0x310D) / 100,
            "device_temperature_c": _s16(r(0x3111)) / 100,
            "power_components_temperature_c": _s16(r(0x3112)) / 100,
            "remote_battery_temperature_c": _s16(r(0x311B)) / 100,
            "battery_rated_v": r(0x311D) / 100,
            "load_on": bool(discharger_status & 0x1),
            "pv_input_state": input_state or "normal",
            "max_pv_v_today": r(0x3300) / 100,
            "min_pv_v_today": r(0x3301) / 100,
            "max_battery_v_today": r(0x3302) / 100,
            "min_battery_v_today": r(0x3303) / 100,
            "consumed_today_kwh": _u32(r(0x3304), r(0x3305)) / 100,
            "consumed_total_kwh": _u32(r(0x330A), r(0x330B)) / 100,
            "generated_today_kwh": _u32(r(0x330C), r(0x330D)) / 100,
            "generated_total_kwh": _u32(r(0x3312), r(0x3313)) / 100,
            "battery_status_raw": battery_status,
            "charging_status_raw": charger_status,
            "discharging_status_raw": discharger_status,
        },
    )


# --- Renogy ----------------------------------------------------------------------------------

RENOGY_BLOCKS: list[tuple[int, int]] = [(0x0100, 0x23)]
RENOGY_CHARGING = {0: "deactivated", 1: "activated", 2: "mppt", 3: "equalize", 4: "boost", 5: "float",
                   6: "current_limiting"}
RENOGY_FAULT_BITS = {
    30: "charge MOS short circuit", 29: "anti-reverse MOS short", 28: "PV reversely connected",
    27: "PV working point over voltage", 26: "PV counter current", 25: "PV input over voltage",
    24: "PV input short circuit", 23: "PV input overpower", 22: "ambient temperature too high",
    21: "controller temperature too high", 20: "load overpower or overcurrent", 19: "load short circuit",
    18: "battery under-voltage warning", 17: "battery over voltage", 16: "battery over-discharge",
}


def decode_renogy(regs: dict[int, int]) -> Reading:
    """Registers (address -> raw value) of a Rover -> Reading."""
    def r(addr: int) -> int:
        return regs[addr]

    battery_v = r(0x0101) / 10
    charge_a = r(0x0102) / 100
    load_a = r(0x0105) / 100
    faults = _u32(r(0x0122), r(0x0121))
    problems = [text for bit, text in RENOGY_FAULT_BITS.items() if faults & (1 << bit)]
    state_word = r(0x0120)
    code = state_word & 0xFF
    return Reading(
        source="renogy",
        pv_v=r(0x0107) / 10,
        pv_w=float(r(0x0109)),
        battery_v=battery_v,
        # the Rover reports what it charges and what its load output draws; their
        # difference is the battery's net current when every load is on the load output
        battery_a=round(charge_a - load_a, 4),
        battery_temperature_c=float(_sign_magnitude_8(r(0x0103) & 0xFF)),
        load_w=float(r(0x0106)),
        soc_pct=float(r(0x0100)),
        charge_state=RENOGY_CHARGING.get(code, f"unknown ({code})"),
        error="; ".join(problems) or None,
        extra={
            "charge_a": charge_a,
            "controller_temperature_c": float(_sign_magnitude_8(r(0x0103) >> 8)),
            "load_v": r(0x0104) / 10,
            "load_a": load_a,
            "pv_a": r(0x0108) / 100,
            "charge_w": float(r(0x0109)),
            "min_battery_v_today": r(0x010B) / 10,
            "max_battery_v_today": r(0x010C) / 10,
            "max_charge_a_today": r(0x010D) / 100,
            "max_discharge_a_today": r(0x010E) / 100,
            "max_charge_w_today": float(r(0x010F)),
            "max_discharge_w_today": float(r(0x0110)),
            "charge_ah_today": float(r(0x0111)),
            "discharge_ah_today": float(r(0x0112)),
            "generated_today_kwh": r(0x0113) / 10000,
            "consumed_today_kwh": r(0x0114) / 10000,
            "operating_days": r(0x0115),
            "over_discharges": r(0x0116),
            "full_charges": r(0x0117),
            "charge_ah_total": float(_u32(r(0x0119), r(0x0118))),
            "discharge_ah_total": float(_u32(r(0x011B), r(0x011A))),
            "generated_total_kwh": _u32(r(0x011D), r(0x011C)) / 10000,
            "consumed_total_kwh": _u32(r(0x011F), r(0x011E)) / 10000,
            "load_on": bool(state_word & 0x8000),
            "load_brightness_pct": (state_word >> 8) & 0x7F,
            "fault_bits": faults,
        },
    )


# --- the source ------------------------------------------------------------------------------

_DEVICES: dict[str, tuple[int, Sequence[tuple[int, int]], Callable[[dict[int, int]], Reading], int]] = {
    # name: (function code, register blocks, decoder, default baud)
    "epever": (4, EPEVER_BLOCKS, decode_epever, 115200),
    "renogy": (3, RENOGY_BLOCKS, decode_renogy, 9600),
}


class ModbusSource:
    """Polls one EPEVER or Renogy controller; each ``read`` is one full poll."""

    def __init__(self, device: str, port: str, baud: int | None = None, unit: int = 1,
                 reply_timeout_s: float = 0.5) -> None:
        if device not in _DEVICES:
            raise ValueError(f"unknown Modbus device {device!r} (expected one of {sorted(_DEVICES)})")
        self.name = device
        self.device = device
        self.port = port
        self.function_code, self.blocks, self._decode, default_baud = _DEVICES[device]
        self.baud = baud or default_baud
        self.unit = unit
        self.reply_timeout_s = reply_timeout_s
        self._instrument: Any = None
        self._counters = {"polls_ok": 0, "modbus_errors": 0}

    def open(self) -> None:
        import minimalmodbus
        import serial

        try:
            instrument = minimalmodbus.Instrument(self.port, self.unit, mode=minimalmodbus.MODE_RTU)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SourceError(f"cannot open Modbus port {self.port}: {exc}") from None
        instrument.serial.baudrate = self.baud
        instrument.serial.bytesize = 8
        instrument.serial.parity = serial.PARITY_NONE
        instrument.serial.stopbits = 1
        instrument.serial.timeout = self.reply_timeout_s
        instrument.clear_buffers_before_each_transaction = True
        self._instrument = instrument

    def close(self) -> None:
        if self._instrument is not None:
            try:
                self._instrument.serial.close()
            except Exception:  # a vanished USB adapter may fail to close; nothing to do
                pass
            self._instrument = None

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def read_registers(self) -> dict[int, int]:
        import minimalmodbus
        import serial

        if self._instrument is None:
            raise SourceError("Modbus port is not open")
        regs: dict[int, int] = {}
        for start, count in self.blocks:
            try:
                values = self._instrument.read_registers(start, count, functioncode=self.function_code)
            except (minimalmodbus.ModbusException, serial.SerialException, OSError, ValueError) as exc:
                self._counters["modbus_errors"] += 1
                raise SourceError(f"{self.device} unit {self.unit} on {self.port}: reading "
                                  f"0x{start:04X}+{count}: {type(exc).__name__}: {exc}") from None
            regs.update(zip(range(start, start + count), values, strict=True))
        self._counters["polls_ok"] += 1
        return regs

    def read(self, timeout_s: float) -> Reading | None:
        """One poll.  ``timeout_s`` is ignored: each request has ``reply_timeout_s``."""
        return self._decode(self.read_registers())
