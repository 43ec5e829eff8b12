"""Where the job's layers begin, found in the chunks the streamer reads: a checkpoint at each layer change.

Why: a checkpoint taken as a layer starts records a clean point (a resume replays at most the few
moves after it), and the layer number shown after a power cut matches the slicer's.  The markers
are the slicers' own comment lines (the same ones ``node.printer.resume`` counts); the search runs
in C (``bytes.find``) over each 64 KiB chunk, never per line.
"""
from __future__ import annotations

from collections import deque

from node.printer.resume import LAYER_MARKERS

_NEEDLES = tuple(b"\n" + marker for marker in LAYER_MARKERS)
_TAIL = max(len(needle) for needle in _NEEDLES) - 1


class LayerMarks:
    """Byte offsets of the layer markers ahead of the acknowledged point."""

    def __init__(self, start_offset: int) -> None:
        # a marker on the file's first line has no newline before it
        self._tail = b"\n" if start_offset == 0 else b""
        self._next_offset = start_offset  # file offset of the next chunk's first byte
        self._marks: deque[int] = deque()
        self._last = -1

    def feed(self, chunk: bytes) -> None:
        """Record the markers in the next chunk read from the file (chunks in file order)."""
        data = self._tail + chunk
        base = self._next_offset - len(self._tail)
        found = []
        for needle in _NEEDLES:
            at = data.find(needle)
            while at >= 0:
                found.append(base + at + 1)  # the marker line starts after the newline
                at = data.find(needle, at + 1)
        for offset in sorted(found):
            if offset > self._last:
                self._marks.append(offset)
                self._last = offset
        self._next_offset += len(chunk)
        self._tail = data[-_TAIL:]

    def passed(self, acked_offset: int) -> int:
        """How many layer starts the acknowledged point has reached since the last call."""
        count = 0
        while self._marks and self._marks[0] <= acked_offset:
            self._marks.popleft()
            count += 1
        return count
