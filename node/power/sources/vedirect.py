"""Victron VE.Direct text protocol: a byte-level parser, the field map and a pyserial source.

Facts from Victron's "VE.Direct Protocol" document (version 3.3x), the text-mode part:

- 19200 baud, 8N1, no flow control; the device sends one *block* about once a second.
- A block is a series of fields ``\\r\\n<label>\\t<value>`` ending with the field
  ``\\r\\nChecksum\\t<one byte>``.  All bytes of the block, from the first ``\\r\\n`` up to
  and including that checksum byte, add up to 0 modulo 256.  The checksum byte is
  therefore *any* value, including ``:``, ``\\r`` or ``\\n``: the parser takes the byte
  after ``Checksum\\t`` as data, whatever it is.
- Asynchronous HEX-protocol frames (``:`` ... ``\\n``) may be interleaved anywhere
  except in place of the checksum byte; they are not part of the block's sum and are
  skipped.
- BMV battery monitors split one update into two blocks (main values, then the
  history ``H1``..``H18``), each with its own checksum; :class:`BlockMerger` joins them.
- Labels are at most 9 characters and values at most 33; anything much longer is
  line noise and resynchronises the parser.

Written here rather than taken from the PyPI ``vedirect`` package, which mishandles
checksum bytes that equal ``:``/CR/LF and HEX frames.
"""
from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from node.power.sources import Reading, SourceError

log = logging.getLogger(__name__)

BAUD = 19200
MAX_LABEL_LEN = 16
MAX_VALUE_LEN = 64

# parser states
_IDLE, _BEGIN, _LABEL, _VALUE, _CHECKSUM, _HEX = range(6)


@dataclass
class ParserCounters:
    blocks_ok: int = 0
    checksum_errors: int = 0
    partial_first_blocks: int = 0
    hex_frames: int = 0
    framing_errors: int = 0


class VEDirectParser:
    """Bytes in, checksum-valid blocks (``dict[label, value]``) out.  Pure, no I/O.

    The first block after start is usually cut off (we joined mid-stream): if its
    checksum fails it is counted in ``partial_first_blocks``, not as corruption.
    """

    def __init__(self) -> None:
        self.counters = ParserCounters()
        self._state = _IDLE
        self._state_before_hex = _IDLE
        self._sum = 0
        self._label = bytearray()
        self._value = bytearray()
        self._fields: dict[str, str] = {}
        self._synced = False  # True once a block boundary (a checksum byte) has been seen

    def feed(self, data: bytes) -> list[dict[str, str]]:
        blocks: list[dict[str, str]] = []
        for byte in data:
            block = self._feed_byte(byte)
            if block is not None:
                blocks.append(block)
        return blocks

    def _reset_block(self) -> None:
        self._sum = 0
        self._fields = {}
        self._label.clear()
        self._value.clear()

    def _feed_byte(self, byte: int) -> dict[str, str] | None:
        state = self._state
        if state == _HEX:
            if byte == 0x0A:
                self._state = self._state_before_hex
            return None
        if byte == 0x3A and state != _CHECKSUM:  # ':' starts a HEX frame, outside the sum
            self.counters.hex_frames += 1
            self._state_before_hex = state
            self._state = _HEX
            return None
        self._sum = (self._sum + byte) & 0xFF
        if state == _IDLE:
            if byte == 0x0A:
                self._state = _BEGIN
            return None
        if state == _BEGIN:
            if byte in (0x0D, 0x0A):  # empty line: stay at a field start
                return None
            self._label.clear()
            self._label.append(byte)
            self._state = _LABEL
            return None
        if state == _LABEL:
            if byte == 0x09:
                if self._label == b"Checksum":
                    self._state = _CHECKSUM
                else:
                    self._value.clear()
                    self._state = _VALUE
            elif byte in (0x0D, 0x0A) or len(self._label) >= MAX_LABEL_LEN:
                self._framing_error()
            else:
                self._label.append(byte)
            return None
        if state == _VALUE:
            if byte == 0x0A:
                self._fields[self._label.decode("ascii", "replace")] = self._value.decode("ascii", "replace")
                self._state = _BEGIN
            elif byte == 0x0D:
                pass
            elif len(self._value) >= MAX_VALUE_LEN:
                self._framing_error()
            else:
                self._value.append(byte)
            return None
        # _CHECKSUM: this byte is the checksum itself, whatever its value
        fields, ok, first = self._fields, self._sum == 0, not self._synced
        self._synced = True
        self._reset_block()
        self._state = _IDLE
        if ok and fields:
            self.counters.blocks_ok += 1
            return fields
        if first:
            self.counters.partial_first_blocks += 1
        else:
            self.counters.checksum_errors += 1
            log.debug("VE.Direct block dropped: bad checksum (%d fields)", len(fields))
        return None

    def _framing_error(self) -> None:
        self.counters.framing_errors += 1
        self._reset_block()
        self._synced = False  # the next block may be cut off too
        self._state = _IDLE


class BlockMerger:
    """Join the blocks of one device update (a BMV sends two per second).

    A new block whose labels overlap the pending update starts the next update,
    so the pending one is complete and returned.  The reader also calls
    :meth:`flush` when the line goes quiet (the gap between updates), or at once
    when the pending update is :attr:`complete`: it holds every label the device
    has sent in any update (a one-block device's update ends with its block, a
    BMV's with its second), so the reader need not wake once more for the quiet
    gap.  Every label ever, not the last update's: after a BMV history block lost
    to a checksum error the next main block alone is not complete, or the history
    block behind it would become an update of its own.
    """

    def __init__(self) -> None:
        self._pending: dict[str, str] = {}
        self._last_labels: frozenset[str] = frozenset()

    def add(self, block: dict[str, str]) -> dict[str, str] | None:
        done = None
        if self._pending and not self._pending.keys().isdisjoint(block.keys()):
            done = self._pending
            self._last_labels |= done.keys()
            self._pending = {}
        self._pending.update(block)
        return done

    def flush(self) -> dict[str, str] | None:
        done, self._pending = (self._pending or None), {}
        if done:
            self._last_labels |= done.keys()
        return done

    @property
    def complete(self) -> bool:
        """The pending update has every label the device has sent: nothing more is coming for it."""
        return bool(self._last_labels) and self._pending.keys() >= self._last_labels

    @property
    def pending(self) -> bool:
        """An update is begun and not yet ended (by a quiet gap or an overlapping block)."""
        return bool(self._pending)


# --- the field map ---------------------------------------------------------------------------

CHARGE_STATES = {
    0: "off", 1: "low_power", 2: "fault", 3: "bulk", 4: "absorption", 5: "float", 6: "storage",
    7: "equalize", 9: "inverting", 11: "power_supply", 245: "starting_up", 246: "repeated_absorption",
    247: "auto_equalize", 248: "battery_safe", 252: "external_control",
}
ERRORS = {
    0: "no error", 2: "battery voltage too high", 17: "charger temperature too high",
    18: "charger over current", 19: "charger current reversed", 20: "bulk time limit exceeded",
    21: "current sensor issue", 26: "terminals overheated", 28: "converter issue",
    33: "input voltage too high (solar panel)", 34: "input current too high (solar panel)",
    38: "input shutdown (excessive battery voltage)", 39: "input shutdown (current flow during off mode)",
    65: "lost communication with one of the devices", 66: "synchronised charging device configuration issue",
    67: "BMS connection lost", 68: "network misconfigured", 116: "factory calibration data lost",
    117: "invalid or incompatible firmware", 119: "user settings invalid",
}
MPPT_MODES = {0: "off", 1: "voltage_or_current_limited", 2: "mppt_active"}
DEVICE_MODES = {1: "charger", 2: "inverter", 4: "off", 5: "eco", 253: "hibernate"}
MONITOR_MODES = {
    -9: "solar_charger", -8: "wind_turbine", -7: "shaft_generator", -6: "alternator", -5: "fuel_cell",
    -4: "water_generator", -3: "dc_dc_charger", -2: "ac_charger", -1: "generic_source", 0: "battery_monitor",
    1: "generic_load", 2: "electric_drive", 3: "fridge", 4: "water_pump", 5: "bilge_pump", 6: "dc_system",
    7: "inverter", 8: "water_heater",
}
ALARM_BITS = {
    1: "low_voltage", 2: "high_voltage", 4: "low_soc", 8: "low_starter_voltage", 16: "high_starter_voltage",
    32: "low_temperature", 64: "high_temperature", 128: "mid_voltage", 256: "overload", 512: "dc_ripple",
    1024: "low_v_ac_out", 2048: "high_v_ac_out", 4096: "short_circuit", 8192: "bms_lockout",
}
OFF_REASON_BITS = {
    0x1: "no_input_power", 0x2: "switched_off_power_switch", 0x4: "switched_off_device_mode_register",
    0x8: "remote_input", 0x10: "protection_active", 0x20: "paygo", 0x40: "bms", 0x80: "engine_shutdown_detection",
    0x100: "analysing_input_voltage",
}


def _num(raw: str) -> float:
    return float(int(raw, 0)) if raw.lower().startswith("0x") else float(raw)


def _scaled(factor: float) -> Callable[[str], float]:
    return lambda raw: _num(raw) * factor


def _integer(raw: str) -> int:
    return int(raw, 0)


def _on_off(raw: str) -> bool:
    value = raw.strip().upper()
    if value not in ("ON", "OFF"):
        raise ValueError(f"expected ON or OFF, got {raw!r}")
    return value == "ON"


def _bits(table: dict[int, str]) -> Callable[[str], list[str]]:
    def convert(raw: str) -> list[str]:
        value = int(raw, 0)
        return [name for bit, name in table.items() if value & bit] + (
            [f"unknown_0x{value & ~sum(table):x}"] if value & ~sum(table) else [])
    return convert


def _coded(table: dict[int, str]) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        code = int(raw, 0)
        return table.get(code, f"unknown ({code})")
    return convert


def _ttg(raw: str) -> float | None:
    minutes = int(raw)
    return None if minutes < 0 else float(minutes)  # -1 = infinite (not discharging)


def _text(raw: str) -> str:
    return raw.strip()


#: every documented text-mode label -> (name in SI units, converter)
FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "V": ("battery_v", _scaled(1e-3)),
    "V2": ("battery2_v", _scaled(1e-3)),
    "V3": ("battery3_v", _scaled(1e-3)),
    "VS": ("aux_v", _scaled(1e-3)),
    "VM": ("midpoint_v", _scaled(1e-3)),
    "DM": ("midpoint_deviation_pct", _scaled(0.1)),
    "VPV": ("pv_v", _scaled(1e-3)),
    "PPV": ("pv_w", _scaled(1.0)),
    "I": ("battery_a", _scaled(1e-3)),
    "I2": ("battery2_a", _scaled(1e-3)),
    "I3": ("battery3_a", _scaled(1e-3)),
    "IL": ("load_a", _scaled(1e-3)),
    "LOAD": ("load_on", _on_off),
    "T": ("battery_temperature_c", _scaled(1.0)),
    "P": ("power_w", _scaled(1.0)),
    "CE": ("consumed_ah", _scaled(1e-3)),
    "SOC": ("soc_pct", _scaled(0.1)),
    "TTG": ("time_to_go_min", _ttg),
    "Alarm": ("alarm", _on_off),
    "Relay": ("relay", _on_off),
    "AR": ("alarm_reason", _bits(ALARM_BITS)),
    "OR": ("off_reason", _bits(OFF_REASON_BITS)),
    "H1": ("deepest_discharge_ah", _scaled(1e-3)),
    "H2": ("last_discharge_ah", _scaled(1e-3)),
    "H3": ("average_discharge_ah", _scaled(1e-3)),
    "H4": ("charge_cycles", _integer),
    "H5": ("full_discharges", _integer),
    "H6": ("cumulative_ah_drawn", _scaled(1e-3)),
    "H7": ("min_battery_v", _scaled(1e-3)),
    "H8": ("max_battery_v", _scaled(1e-3)),
    "H9": ("seconds_since_full_charge", _integer),
    "H10": ("automatic_syncs", _integer),
    "H11": ("low_voltage_alarms", _integer),
    "H12": ("high_voltage_alarms", _integer),
    "H13": ("low_aux_voltage_alarms", _integer),
    "H14": ("high_aux_voltage_alarms", _integer),
    "H15": ("min_aux_v", _scaled(1e-3)),
    "H16": ("max_aux_v", _scaled(1e-3)),
    "H17": ("discharged_energy_kwh", _scaled(0.01)),
    "H18": ("charged_energy_kwh", _scaled(0.01)),
    "H19": ("yield_total_kwh", _scaled(0.01)),
    "H20": ("yield_today_kwh", _scaled(0.01)),
    "H21": ("max_power_today_w", _scaled(1.0)),
    "H22": ("yield_yesterday_kwh", _scaled(0.01)),
    "H23": ("max_power_yesterday_w", _scaled(1.0)),
    "ERR": ("error", _coded(ERRORS)),
    "CS": ("charge_state", _coded(CHARGE_STATES)),
    "BMV": ("bmv_model", _text),
    "FW": ("firmware", _text),
    "FWE": ("firmware_24bit", _text),
    "PID": ("product_id", _text),
    "SER#": ("serial_number", _text),
    "HSDS": ("day_sequence", _integer),
    "MODE": ("device_mode", _coded(DEVICE_MODES)),
    "AC_OUT_V": ("ac_out_v", _scaled(0.01)),
    "AC_OUT_I": ("ac_out_a", _scaled(0.1)),
    "AC_OUT_S": ("ac_out_va", _scaled(1.0)),
    "WARN": ("warning_reason", _bits(ALARM_BITS)),
    "MPPT": ("mppt_mode", _coded(MPPT_MODES)),
    "MON": ("monitor_mode", _coded(MONITOR_MODES)),
    "DC_IN_V": ("dc_in_v", _scaled(0.01)),
    "DC_IN_I": ("dc_in_a", _scaled(0.1)),
    "DC_IN_P": ("dc_in_w", _scaled(1.0)),
}


@dataclass
class DecodedRecord:
    values: dict[str, Any] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def decode_fields(raw: dict[str, str]) -> DecodedRecord:
    """Map labels to named SI values; a value that does not parse is reported, not raised."""
    record = DecodedRecord()
    for label, value in raw.items():
        spec = FIELDS.get(label)
        if spec is None:
            record.unknown[label] = value
            continue
        name, convert = spec
        try:
            record.values[name] = convert(value)
        except (ValueError, TypeError) as exc:
            record.problems.append(f"{label}={value!r}: {exc}")
    return record


def record_to_reading(record: DecodedRecord, source: str = "vedirect") -> Reading:
    """Normalize: the common quantities go to the Reading's fields, the rest to ``extra``."""
    values = dict(record.values)
    battery_v = values.get("battery_v")
    load_a = values.get("load_a")
    load_w = None
    if load_a is not None and battery_v is not None:
        load_w = load_a * battery_v
    error = values.get("error")
    if error == ERRORS[0]:
        error = None
    alarms = values.get("alarm_reason") or []
    if error is None and alarms:
        error = "alarm: " + ", ".join(alarms)
    extra = {k: v for k, v in values.items()
             if k not in ("battery_v", "battery_a", "pv_v", "pv_w", "soc_pct", "charge_state", "error",
                          "battery_temperature_c")}
    if record.unknown:
        extra["unknown_fields"] = dict(record.unknown)
    if record.problems:
        extra["field_problems"] = list(record.problems)
    return Reading(
        source=source,
        pv_w=values.get("pv_w"),
        pv_v=values.get("pv_v"),
        battery_v=battery_v,
        battery_a=values.get("battery_a"),
        battery_temperature_c=values.get("battery_temperature_c"),
        load_w=load_w,
        soc_pct=values.get("soc_pct"),
        charge_state=values.get("charge_state"),
        error=error,
        extra=extra,
    )


# --- the serial source -----------------------------------------------------------------------

class VEDirectSource:
    """A VE.Direct device on a serial port (USB cable or a pseudo-terminal in simulation)."""

    name = "vedirect"
    #: a quiet line this long (real seconds) ends an update: half the devices' 1 s period
    quiet_gap_s = 0.5

    def __init__(self, port: str, baud: int = BAUD, source_name: str = "vedirect") -> None:
        self.port = port
        self.baud = baud
        self.source_name = source_name
        self._serial: Any = None
        self.parser = VEDirectParser()
        self._merger = BlockMerger()
        self._ready: list[dict[str, str]] = []
        self._last_byte_s = time.monotonic()

    def open(self) -> None:
        import serial  # pyserial

        self.parser = VEDirectParser()
        self._merger = BlockMerger()
        self._ready = []
        try:
            self._serial = serial.Serial(self.port, self.baud, bytesize=8, parity="N", stopbits=1,
                                         timeout=0.05)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SourceError(f"cannot open VE.Direct port {self.port}: {exc}") from None

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except Exception:  # closing a vanished device may fail; nothing to do
                pass
            self._serial = None

    def counters(self) -> dict[str, int]:
        c = self.parser.counters
        return {"blocks_ok": c.blocks_ok, "checksum_errors": c.checksum_errors,
                "partial_first_blocks": c.partial_first_blocks, "hex_frames": c.hex_frames,
                "framing_errors": c.framing_errors}

    def read_raw(self, timeout_s: float) -> dict[str, str] | None:
        """The next merged update as raw label -> value text (``None`` on timeout)."""
        import serial

        if self._serial is None:
            raise SourceError("VE.Direct port is not open")
        deadline = time.monotonic() + timeout_s
        while not self._ready:
            # sleep until bytes arrive, the quiet gap that ends a begun update, or the deadline: a
            # device speaks once a second, so the thread wakes about twice a second, not 20 times
            # (issue #19: the idle daemon's CPU)
            now = time.monotonic()
            wait_s = deadline - now
            if self._merger.pending:
                wait_s = min(wait_s, self._last_byte_s + self.quiet_gap_s - now)
            try:
                readable, _, _ = select.select([self._serial.fileno()], [], [], max(0.0, wait_s))
                data = self._serial.read(max(1, self._serial.in_waiting)) if readable else b""
            except (serial.SerialException, OSError, ValueError) as exc:
                raise SourceError(f"VE.Direct port {self.port} failed: {exc}") from None
            now = time.monotonic()
            if data:
                self._last_byte_s = now
                for block in self.parser.feed(data):
                    done = self._merger.add(block)
                    if done:
                        self._ready.append(done)
                if self._merger.complete:  # no wake-up for the quiet gap (issue #19)
                    done = self._merger.flush()
                    if done:
                        self._ready.append(done)
            elif now - self._last_byte_s >= self.quiet_gap_s:
                done = self._merger.flush()
                if done:
                    self._ready.append(done)
            if not self._ready and now >= deadline:
                return None
        return self._ready.pop(0)

    def read(self, timeout_s: float) -> Reading | None:
        raw = self.read_raw(timeout_s)
        if raw is None:
            return None
        record = decode_fields(raw)
        for problem in record.problems:
            log.warning("VE.Direct %s: field rejected: %s", self.port, problem)
        return record_to_reading(record, self.source_name)


def encode_block(fields: list[tuple[str, str]]) -> bytes:
    """Build a valid text block (used by the simulated controller and the tests)."""
    body = b"".join(b"\r\n" + label.encode("ascii") + b"\t" + value.encode("ascii") for label, value in fields)
    body += b"\r\nChecksum\t"
    return body + bytes([(-sum(body)) & 0xFF])
