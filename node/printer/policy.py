"""The G-code policy: what a job may send to the printer, read the strictest way any firmware could.

A job line reaches the firmware as the host sends it (comment stripped, numbered and
checksummed).  Firmware read that text more loosely than a person does, and each in its own
way (Marlin's ``queue.cpp`` and ``parser.cpp``; RepRapFirmware's GCodeBuffer):

* a command is a letter, optional spaces, and a number read up to the first non-digit, leading
  zeros dropped (``M 0500`` and ``M500S1`` are M500; ``M00`` is M0), in either case;
* CR ends a command just as LF does, so one numbered line may carry several commands
  (``G4 P0<CR>M502<CR>M500``); tabs are spaces;
* RepRapFirmware and Smoothieware run several commands written on one line (``G1 X1 M500``);
* parameter values go through ``strtod``-like readers, which take hex (``S0x190``), ``nan``,
  ``inf`` and exponents (``S4e2``).

So a line is refused if *any* of those readings would see a forbidden command or an
out-of-limit temperature in it, and every parameter must be a plain decimal number.  Strings
(``M117`` messages, file names, object labels) are the only free text.  A file that is not
G-code at all (binary data, ``/etc/passwd``, a binary ``.bgcode``) is refused by its first line.

Pure functions over bytes: :class:`node.gate.JobGate` runs :func:`check_file` on every path by
which a job becomes queued or resumes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from node.native import streamcore
from node.printer.config import SafetySection

#: commands whose arguments are text, not numbers (messages, file names, object labels, checks)
STRING_COMMANDS = frozenset({"M16", "M23", "M28", "M30", "M32", "M33", "M117", "M118", "M486", "M550", "M587",
                             "M589", "M862", "M928", "M115", "M291", "M292"})
#: commands that set a hotend temperature, with the parameters that carry one (M104 B: autotemp max)
HOTEND_SETTERS = {"M104": "SRB", "M109": "SRB", "G10": "SR", "M568": "SR"}
BED_SETTERS = {"M140": "SR", "M190": "SR"}
#: the longest command number a firmware reads; more digits overflow its integer in its own way
MAX_COMMAND_DIGITS = 5
#: bytes ``N<number> `` + ``*<checksum>\n`` add to a command on the wire (line numbers up to 9,999,999)
FRAMING_BYTES = len("N9999999 ") + len("*255\n")

_DECIMAL = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
_HEAD = re.compile(rb"([A-Za-z]) *([0-9]+)(?:\.([0-9]+))?")
_LINE_NUMBER = re.compile(rb"[Nn] *[0-9]+ *")
_NOT_GCODE_BYTE = re.compile(rb"[\x00-\x08\x0a-\x0c\x0e-\x1f\x7f]")
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_BGCODE_MAGIC = b"GCDE"


class PolicyViolation(ValueError):
    """A job line the printer must never see; ``line_number`` counts lines of the file, 1-based."""

    def __init__(self, line_number: int, byte_offset: int, command: str, reason: str) -> None:
        self.line_number = line_number
        self.byte_offset = byte_offset
        self.command = command
        self.reason = reason
        where = f"line {line_number}: {command!r}: " if command else f"line {line_number}: "
        super().__init__(where + reason)


@dataclass(frozen=True)
class PolicyRules:
    """The policy as the checks need it, built once per file from ``[safety]``."""

    forbidden: frozenset[str]
    max_hotend_c: float
    max_bed_c: float
    max_wire_bytes: int

    @classmethod
    def from_config(cls, config: SafetySection, max_wire_bytes: int = 4096) -> PolicyRules:
        return cls(forbidden_set(config), config.max_hotend_c, config.max_bed_c, max_wire_bytes)

    def fast_path(self) -> re.Pattern[bytes]:
        """Plain moves (``G1 X1.5 E.02``), most of any file: nothing in them can be forbidden unless
        the moves themselves are, so they skip the word-by-word reading."""
        heads = [h for h in ("G0", "G1", "G2", "G3", "G92") if h not in self.forbidden]
        if not heads:
            return re.compile(rb"(?!)")
        alternatives = b"|".join(h.encode() for h in heads)
        return re.compile(rb"(?:" + alternatives + rb")(?: +[A-FH-LO-SU-Z][+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))* *")


def forbidden_set(config: SafetySection) -> frozenset[str]:
    """Forbidden command names, normalised (``M0500`` in a config means M500)."""
    allowed = {_normalise(c) for c in config.allowed_commands}
    return frozenset(n for n in (_normalise(c) for c in [*config.forbidden_commands, *config.extra_forbidden_commands])
                     if n not in allowed)


def _normalise(name: str) -> str:
    match = _HEAD.fullmatch(name.strip().encode())
    if match is None:
        return name.strip().upper()
    return f"{match.group(1).decode().upper()}{int(match.group(2))}"


def check_command(command: bytes, rules: PolicyRules) -> str | None:
    """Why the cleaned job line ``command`` may not be sent, or None."""
    bad = _NOT_GCODE_BYTE.search(command)
    if bad is not None:
        return f"binary data (byte 0x{bad.group()[0]:02x}): this is not a G-code line"
    if len(command) + FRAMING_BYTES > rules.max_wire_bytes:
        return (f"{len(command)} characters: with its line number and checksum it would not fit the printer's "
                f"receive buffer of {rules.max_wire_bytes} bytes")
    for segment in command.replace(b"\t", b" ").split(b"\r"):
        why = _check_segment(segment.strip(), rules)
        if why is not None:
            return why
    return None


def _check_segment(text: bytes, rules: PolicyRules) -> str | None:
    while (number := _LINE_NUMBER.match(text)) is not None:
        text = text[number.end():]
    if not text:
        return None
    if b"*" in text:
        return "contains '*': line numbers and checksums are the host's to add"
    head = _HEAD.match(text)
    if head is None or head.group(1).upper() not in b"GMT":
        return "not a G-code command (a command is G, M or T and a number)"
    letter, digits = head.group(1).decode().upper(), head.group(2).lstrip(b"0") or b"0"
    if len(digits) > MAX_COMMAND_DIGITS:
        return f"command number {head.group(2).decode()} is out of range"
    name = f"{letter}{int(digits)}"
    spelled = text[:head.end()].decode()
    if name in rules.forbidden:
        return f"{_as_read(spelled, name)}is not allowed in a job (safety.forbidden_commands)"
    if name in STRING_COMMANDS:
        return None
    if _NON_ASCII.search(text):
        return "non-ASCII characters outside a comment or a message"
    words, why = _parameters(text[head.end():])
    if why is not None:
        return why
    for word_letter, value in words:
        if word_letter in "GM" and value is not None and f"{word_letter}{int(value)}" in rules.forbidden:
            return (f"{word_letter}{int(value)} in the parameters: firmware that runs several commands per line "
                    f"(RepRapFirmware, Smoothieware) would run it, and it is not allowed in a job")
    for setters, limit_c, what, key in ((HOTEND_SETTERS, rules.max_hotend_c, "hotend", "max_hotend_c"),
                                        (BED_SETTERS, rules.max_bed_c, "bed", "max_bed_c")):
        carriers = setters.get(name)
        if carriers is None:
            continue
        for word_letter, value in words:
            if word_letter in carriers and value is not None and value > limit_c:
                return f"{what} temperature {value:g} °C is above safety.{key} = {limit_c:g}"
    return None


def _as_read(spelled: str, name: str) -> str:
    return f"{spelled.strip()!r} (read by the firmware as {name}) " if spelled.strip() != name else f"{name} "


def _parameters(rest: bytes) -> tuple[list[tuple[str, float | None]], str | None]:
    """``(letter, value)`` words of a command's parameters, or the reason they are not plain G-code."""
    words: list[tuple[str, float | None]] = []
    pos, end = 0, len(rest)
    while pos < end:
        char = rest[pos:pos + 1]
        if char == b" ":
            pos += 1
            continue
        if not char.isalpha():
            return words, f"unexpected {char.decode(errors='replace')!r} in the parameters: not plain G-code"
        letter = char.decode().upper()
        pos += 1
        while rest[pos:pos + 1] == b" ":
            pos += 1
        if rest[pos:pos + 3].lower() in (b"nan", b"inf"):
            return words, f"parameter {letter} is {rest[pos:pos + 3].decode()!r}: not a plain decimal number"
        number = _DECIMAL.match(rest, pos)
        if number is None:
            words.append((letter, None))  # a flag (G28 X, M84 E)
            continue
        pos = number.end()
        follower = rest[pos:pos + 1]
        if follower and (follower in b"xXeE.+-" or follower.isdigit()):
            token = rest[number.start():].split(b" ", 1)[0]
            return words, f"parameter {letter} is {token.decode(errors='replace')!r}: not a plain decimal number"
        words.append((letter, float(number.group())))
    return words, None


def check_file(path: Path, rules: PolicyRules, chunk_bytes: int = 64 * 1024) -> int:
    """Check a whole job file as a stream (flat memory); return how many commands it holds.

    Raises :class:`PolicyViolation` naming the file's line (1-based) and the reason; a file with no
    command at all is refused too (an empty upload, a text file with only comments)."""
    fast = rules.fast_path()
    splitter = streamcore.LineSplitter()
    count = 0
    with path.open("rb") as handle:
        first = handle.read(chunk_bytes)
        if first.startswith(_BGCODE_MAGIC):
            raise PolicyViolation(1, 0, "", "a binary G-code file (.bgcode): export plain-text G-code instead")
        chunk = first
        while True:
            batch = splitter.feed(chunk) if chunk else splitter.finish()
            for offset, command in batch:
                count += 1
                if command is None:
                    raise PolicyViolation(_line_of(path, offset), offset, "",
                                          "line longer than 4096 bytes: this is not a G-code file")
                if fast.fullmatch(command):
                    continue
                why = check_command(command, rules)
                if why is not None:
                    raise PolicyViolation(_line_of(path, offset), offset,
                                          command.decode("ascii", errors="replace"), why)
            if not chunk:
                break
            chunk = handle.read(chunk_bytes)
    if count == 0:
        raise PolicyViolation(1, 0, "", "the file holds no G-code command")
    return count


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
