"""The serial port: open it (by-id path preferred), read lines with a real timeout, write bytes.

Blocking by design: only the printer worker thread touches it.  Timeouts are
real (monotonic) time: a printer does not answer faster in a simulation.
"""
from __future__ import annotations

import glob
import logging
import os
import time

import serial

log = logging.getLogger(__name__)


class LinkClosed(ConnectionError):
    """The port went away (unplugged, printer powered off, pty closed)."""


def resolve_port(port: str) -> str:
    """``auto`` -> the first ``/dev/serial/by-id`` entry; a path is kept as given.

    By-id names survive re-plugging into another USB socket, ``/dev/ttyUSB0`` does not.
    """
    if port != "auto":
        return port
    candidates = sorted(glob.glob("/dev/serial/by-id/*"))
    if not candidates:
        raise LinkClosed("no serial device under /dev/serial/by-id (is the printer plugged in and powered?)")
    return candidates[0]


class SerialLink:
    """A line-oriented wrapper over a pyserial port."""

    def __init__(self, port: str, baud: int) -> None:
        self.port = resolve_port(port)
        self.baud = baud
        self._serial: serial.Serial | None = None
        self._buffer = bytearray()

    def open(self) -> None:
        try:
            self._serial = serial.Serial(self.port, self.baud, timeout=0.1, write_timeout=5.0)
        except (serial.SerialException, OSError) as exc:
            raise LinkClosed(f"cannot open {self.port}: {exc}") from exc
        log.info("printer port %s open at %d baud", os.path.realpath(self.port), self.baud)

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self._serial.is_open

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except (serial.SerialException, OSError):
                pass
            self._serial = None

    def write(self, data: bytes) -> None:
        if self._serial is None:
            raise LinkClosed("port not open")
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise LinkClosed(f"write to {self.port} failed: {exc}") from exc

    def readline(self, timeout_s: float) -> bytes | None:
        """One line without its newline, or None if ``timeout_s`` of real time passed first."""
        if self._serial is None:
            raise LinkClosed("port not open")
        deadline = time.monotonic() + timeout_s
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline]).rstrip(b"\r")
                del self._buffer[: newline + 1]
                return line
            if time.monotonic() >= deadline:
                return None
            try:
                waiting = self._serial.in_waiting
                chunk = self._serial.read(waiting or 1)
            except (serial.SerialException, OSError) as exc:
                raise LinkClosed(f"read from {self.port} failed: {exc}") from exc
            if chunk:
                self._buffer += chunk
