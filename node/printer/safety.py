"""Host-side safety: a thermal watchdog over the printer's reports, and the G-code policy.

Why on the host: many stock boards ship with Marlin's thermal protection
disabled (THERMAL_PROTECTION_HOTENDS / _BED off, or badly tuned), and a printer
on an unattended off-grid node has nobody to smell the smoke.  The watchdog is
pure (reports and times in, a :class:`ThermalViolation` out); the worker acts
on it with ``M112`` (Marlin's emergency parser executes it even mid-command)
and then the relay hook, which cuts the printer's power where a relay exists.

The policy check runs before a job is queued: a file that would set a
temperature above the limits, flash firmware (M997) or rewrite settings
(M500/M502/M501 EEPROM, M852...) is rejected, naming the line and the reason.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from node.native import streamcore
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


# --- the G-code policy ----------------------------------------------------------------------
class PolicyViolation(ValueError):
    def __init__(self, line_number: int, byte_offset: int, command: str, reason: str) -> None:
        self.line_number = line_number
        self.byte_offset = byte_offset
        self.command = command
        self.reason = reason
        super().__init__(f"line {line_number}: {command!r}: {reason}")


_HOTEND_SETTERS = frozenset(("M104", "M109"))
_BED_SETTERS = frozenset(("M140", "M190"))


def _word(command: str, letter: str) -> float | None:
    for part in command.split()[1:]:
        if part[:1].upper() == letter:
            try:
                return float(part[1:])
            except ValueError:
                return None
    return None


def forbidden_set(config: SafetySection) -> frozenset[str]:
    allowed = {c.upper() for c in config.allowed_commands}
    return frozenset(c.upper() for c in [*config.forbidden_commands, *config.extra_forbidden_commands]
                     if c.upper() not in allowed)


def check_command(command: str, config: SafetySection, forbidden: frozenset[str]) -> str | None:
    """Why ``command`` (cleaned, no line number) may not run from a job, or None."""
    head = command.split(" ", 1)[0].upper()
    if head in forbidden:
        return f"{head} is not allowed in a job (safety.forbidden_commands)"
    if head in _HOTEND_SETTERS:
        value = _word(command, "S") or _word(command, "R")
        if value is not None and value > config.max_hotend_c:
            return f"hotend temperature {value:g} °C is above safety.max_hotend_c = {config.max_hotend_c:g}"
    if head in _BED_SETTERS:
        value = _word(command, "S") or _word(command, "R")
        if value is not None and value > config.max_bed_c:
            return f"bed temperature {value:g} °C is above safety.max_bed_c = {config.max_bed_c:g}"
    return None


def check_lines(lines: Iterable[tuple[int, bytes | None]], config: SafetySection,
                max_line_bytes: int = 4096) -> None:
    """Raise :class:`PolicyViolation` for the first offending line of ``(byte_offset, command)`` pairs."""
    forbidden = forbidden_set(config)
    for number, (offset, command) in enumerate(lines, 1):
        if command is None:
            raise PolicyViolation(number, offset, "", f"line longer than {max_line_bytes} bytes")
        text = command.decode("ascii", errors="replace")
        why = check_command(text, config, forbidden)
        if why is not None:
            raise PolicyViolation(number, offset, text, why)


def check_file(path: Path, config: SafetySection, chunk_bytes: int = 64 * 1024) -> None:
    """Check a whole job file as a stream (flat memory); line numbers count commands, 1-based."""
    splitter = streamcore.LineSplitter()
    forbidden = forbidden_set(config)
    heads = tuple({*forbidden, *_HOTEND_SETTERS, *_BED_SETTERS})
    count = 0
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(chunk_bytes)
            batch = splitter.feed(chunk) if chunk else splitter.finish()
            for offset, command in batch:
                count += 1
                if command is None:
                    raise PolicyViolation(_line_of(path, offset), offset, "", "line longer than 4096 bytes")
                if command[:1] in (b"M", b"m") and command.split(b" ", 1)[0].decode(errors="replace").upper() in heads:
                    text = command.decode("ascii", errors="replace")
                    why = check_command(text, config, forbidden)
                    if why is not None:
                        raise PolicyViolation(_line_of(path, offset), offset, text, why)
            if not chunk:
                return


def _line_of(path: Path, offset: int) -> int:
    """1-based line number of the byte at ``offset`` (only computed for a refusal)."""
    count = 1
    with path.open("rb") as handle:
        while offset > 0:
            chunk = handle.read(min(1 << 16, offset))
            if not chunk:
                break
            count += chunk.count(b"\n")
            offset -= len(chunk)
    return count
