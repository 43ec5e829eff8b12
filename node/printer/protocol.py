"""Marlin host protocol, printer-to-host side: classify each line the printer sends.

Pure: a line in, a :class:`Reply` out.  Printer-to-host lines carry no checksum,
so the parser is lenient (a garbled byte yields ``other``, never an exception)
and only unambiguous text counts as fatal.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

PWM_MAX = 127.0

_TEMP = re.compile(
    r"T:\s*(?P<t>-?\d+(?:\.\d+)?)\s*/\s*(?P<tt>-?\d+(?:\.\d+)?)"
    r"(?:.*?B:\s*(?P<b>-?\d+(?:\.\d+)?)\s*/\s*(?P<bt>-?\d+(?:\.\d+)?))?"
    r"(?:.*?\s@:\s*(?P<p>\d+))?(?:.*?B@:\s*(?P<bp>\d+))?"
)
_RESEND = re.compile(r"^(?:Resend:|rs)\s*N?\s*(\d+)", re.IGNORECASE)
_FATAL_MARKERS = ("halted", "kill", "thermal runaway", "mintemp", "maxtemp", "heating failed",
                  "thermal malfunction")


class Kind(Enum):
    OK = "ok"
    RESEND = "resend"
    ERROR = "error"  # recoverable (line number, checksum, unknown)
    FATAL = "fatal"
    BUSY = "busy"
    WAIT = "wait"
    TEMPERATURE = "temperature"
    START = "start"
    ACTION = "action"
    CAPABILITY = "capability"
    FIRMWARE = "firmware"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class TemperatureReport:
    hotend_c: float
    hotend_target_c: float
    bed_c: float
    bed_target_c: float
    hotend_pwm: float | None
    bed_pwm: float | None


@dataclass(frozen=True, slots=True)
class Reply:
    kind: Kind
    text: str
    line_number: int | None = None
    temperatures: TemperatureReport | None = None
    action: str | None = None


def parse_temperatures(text: str) -> TemperatureReport | None:
    match = _TEMP.search(text)
    if match is None:
        return None
    g = match.groupdict()
    return TemperatureReport(
        hotend_c=float(g["t"]), hotend_target_c=float(g["tt"]),
        bed_c=float(g["b"] or 0.0), bed_target_c=float(g["bt"] or 0.0),
        hotend_pwm=None if g["p"] is None else min(1.0, int(g["p"]) / PWM_MAX),
        bed_pwm=None if g["bp"] is None else min(1.0, int(g["bp"]) / PWM_MAX),
    )


def classify(raw: bytes) -> Reply:
    """Classify one line from the printer (without its newline)."""
    text = raw.decode("ascii", errors="replace").strip()
    lower = text.lower()
    if lower.startswith("ok"):
        return Reply(Kind.OK, text, temperatures=parse_temperatures(text) if "T:" in text else None)
    resend = _RESEND.match(text)
    if resend:
        return Reply(Kind.RESEND, text, line_number=int(resend.group(1)))
    if lower.startswith("error:") or lower.startswith("!!"):
        if any(marker in lower for marker in _FATAL_MARKERS) or lower.startswith("!!"):
            return Reply(Kind.FATAL, text)
        return Reply(Kind.ERROR, text)
    if lower.startswith("echo:busy") or lower.startswith("busy:"):
        return Reply(Kind.BUSY, text)
    if lower == "wait":
        return Reply(Kind.WAIT, text)
    if lower == "start":
        return Reply(Kind.START, text)
    if lower.startswith("//action:"):
        return Reply(Kind.ACTION, text, action=text.split(":", 1)[1].strip().split(" ", 1)[0])
    if lower.startswith("cap:"):
        return Reply(Kind.CAPABILITY, text)
    if lower.startswith("firmware_name:"):
        return Reply(Kind.FIRMWARE, text)
    if "T:" in text:
        report = parse_temperatures(text)
        if report is not None:
            return Reply(Kind.TEMPERATURE, text, temperatures=report)
    return Reply(Kind.OTHER, text)


def capabilities(lines: list[str]) -> dict[str, bool]:
    """``Cap:NAME:1`` lines of an M115 reply as a dict."""
    caps = {}
    for line in lines:
        parts = line.split(":")
        if len(parts) >= 3 and parts[0].lower() == "cap":
            caps[parts[1].strip().upper()] = parts[2].strip() == "1"
    return caps
