"""Where a job first puts plastic on the plate: the byte offset of its first extruding move.

The plate gate needs it: a job cancelled while heating leaves the plate clear, one cancelled
after its first extrusion (even a purge line) does not.  An extruding move is a G0/G1/G2/G3
whose E moves the filament forward: in relative E mode (M83, or G91 without M82) any positive
E; in absolute mode an E above the position G92 set or the last move reached.
"""
from __future__ import annotations

import re
from pathlib import Path

from node.native import streamcore

_E_WORD = re.compile(rb"[Ee] *([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))")
_HEAD = re.compile(rb"([GgMm]) *0*([0-9]+)")
_MOVES = frozenset({0, 1, 2, 3})


def first_extrusion_offset(path: Path, chunk_bytes: int = 64 * 1024) -> int | None:
    """Byte offset of the first line that extrudes, or None if the file never extrudes."""
    splitter = streamcore.LineSplitter()
    relative_e = False
    e_mm = 0.0
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(chunk_bytes)
            for offset, command in splitter.feed(chunk) if chunk else splitter.finish():
                head = _HEAD.match(command or b"")
                if head is None:
                    continue
                letter, number = head.group(1).upper(), int(head.group(2))
                if letter == b"M" and number in (82, 83):
                    relative_e = number == 83
                    continue
                if letter == b"G" and number in (90, 91):
                    relative_e = number == 91
                    continue
                word = _E_WORD.search(command, head.end())
                if word is None or letter != b"G":
                    continue
                value = float(word.group(1))
                if number == 92:
                    e_mm = value
                elif number in _MOVES:
                    if (value if relative_e else value - e_mm) > 1e-9:
                        return offset
                    e_mm = e_mm + value if relative_e else value
            if not chunk:
                return None
