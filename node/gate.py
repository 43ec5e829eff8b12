"""The one gate: every path by which a job becomes queued or resumes passes the same checks.

The paths are the CLI (``queue add``, ``print``), the control API, a hub manifest once its file
is verified, and resume (a person's or the automatic one).  The checks are the G-code policy
(:mod:`node.printer.policy`: forbidden commands under any spelling, temperature limits, plain
numbers, lines that fit the printer's receive buffer, G-code at all).  A job the gate refuses is
``rejected`` with the line and the reason; a resume it refuses stays where it is, with the reason.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from node.printer.config import PrinterSection, SafetySection
from node.printer.policy import PolicyRules, PolicyViolation, check_file


class JobGate:
    """Built once from ``[safety]`` and the printer's receive buffer; shared by every path."""

    def __init__(self, safety: SafetySection, max_wire_bytes: int) -> None:
        self.safety = safety
        self.rules = PolicyRules.from_config(safety, max_wire_bytes)

    @classmethod
    def for_printer(cls, safety: SafetySection, printer: PrinterSection, profile_rx_buffer_bytes: int) -> JobGate:
        """The smaller of the configured and the profile's receive buffer bounds a line on the wire."""
        return cls(safety, min(printer.rx_buffer_bytes, profile_rx_buffer_bytes))

    def check(self, path: Path) -> None:
        """Raise :class:`PolicyViolation` (line and reason) or return: blocking, for threads and the CLI."""
        if not path.is_file():
            raise PolicyViolation(0, 0, "", f"the job's file {path.name} is missing")
        check_file(path, self.rules)

    async def refusal(self, path: Path) -> str | None:
        """Why the file at ``path`` may not print, or None; the file is read in a thread."""
        try:
            await asyncio.to_thread(self.check, path)
        except PolicyViolation as exc:
            return f"safety policy: {exc}"
        except OSError as exc:
            return f"the job's file cannot be read: {exc.strerror or exc}"
        return None
