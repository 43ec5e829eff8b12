"""The serial port: open it (by-id path preferred), read lines with a real timeout, write bytes.

Blocking by design: only the printer worker thread touches it.  Timeouts are
real (monotonic) time: a printer does not answer faster in a simulation.
"""
from __future__ import annotations

import glob
import logging
import os
import select
import time
from termios import error as termios_error

import serial

log = logging.getLogger(__name__)


class LinkClosed(ConnectionError):
    """The port went away (unplugged, printer powered off, pty closed)."""


class PortBusy(LinkClosed):
    """Another process holds the port."""


def by_id_name(device: str) -> str | None:
    """The ``/dev/serial/by-id`` link that points at ``device`` (e.g. /dev/ttyUSB0), if any."""
    real = os.path.realpath(device)
    for candidate in sorted(glob.glob("/dev/serial/by-id/*")):
        if os.path.realpath(candidate) == real:
            return candidate
    return None


def resolve_port(port: str) -> str:
    """``auto`` -> the first ``/dev/serial/by-id`` entry; a device path -> its by-id name when it has one.

    By-id names survive re-plugging into another USB socket, ``/dev/ttyUSB0`` does not:
    after the printer is power-cycled it may come back as ttyUSB1.
    """
    if port != "auto":
        return by_id_name(port) or port
    candidates = sorted(glob.glob("/dev/serial/by-id/*"))
    if not candidates:
        raise LinkClosed("no serial device under /dev/serial/by-id (is the printer plugged in and powered?)")
    return candidates[0]


class SerialLink:
    """A line-oriented wrapper over a pyserial port."""

    def __init__(self, port: str, baud: int) -> None:
        self.configured_port = port
        self.port = port if port == "auto" else resolve_port(port)
        self.baud = baud
        self._serial: serial.Serial | None = None
        self._buffer = bytearray()

    def open(self, exclusive: bool = True) -> None:
        """Open the port, resolving it again: after a re-plug the by-id link may point elsewhere.

        ``exclusive`` takes an advisory lock (flock, as pyserial does): a second opener
        (``printnode print`` while the daemon prints) is refused instead of interleaving lines.
        """
        self.port = resolve_port(self.configured_port)
        try:
            self._serial = serial.Serial(self.port, self.baud, timeout=0.1, write_timeout=5.0,
                                         exclusive=exclusive)
        except (serial.SerialException, OSError) as exc:
            if "lock" in str(exc).lower():
                raise PortBusy(f"{self.port} is held by another process (is the printnode daemon "
                               f"running on it?): {exc}") from exc
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

    def reset_board(self) -> None:
        """Pulse DTR, close the port: a board wired for auto-reset (most USB printers) reboots, which
        turns its heaters off whatever its command queue holds.  The next open handshakes afresh.

        The auto-reset circuit couples the USB chip's DTR# pin to RESET through a capacitor: it is the
        *assertion* of DTR (DTR# falling) that pulls RESET low, so the port's DTR is released and
        asserted again; releasing it alone (or closing the port) would leave the board running."""
        if self._serial is not None:
            try:
                self._serial.dtr = False
                time.sleep(0.1)
                self._serial.dtr = True
                time.sleep(0.1)
            except (serial.SerialException, OSError, termios_error):
                pass  # a pty has no DTR: closing it is what the other side sees
        self.close()

    def write(self, data: bytes) -> None:
        if self._serial is None:
            raise LinkClosed("port not open")
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise LinkClosed(f"write to {self.port} failed: {exc}") from exc

    def drop_input(self) -> None:
        """Forget bytes received before now (stale replies, an old boot banner)."""
        self._buffer.clear()
        if self._serial is not None:
            try:
                self._serial.reset_input_buffer()
            except (serial.SerialException, OSError, termios_error) as exc:
                raise LinkClosed(f"cannot flush {self.port}: {exc}") from exc

    def fileno(self) -> int:
        if self._serial is None:
            raise LinkClosed("port not open")
        return self._serial.fileno()

    def read_chunk(self, timeout_s: float) -> bytes:
        """Whatever bytes arrive within ``timeout_s`` (b'' if none): one syscall, not one per line."""
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        fd = self.fileno()
        try:
            ready, _, _ = select.select([fd], [], [], timeout_s)
            if not ready:
                return b""
            data = os.read(fd, 65536)
        except BlockingIOError:
            return b""
        except (OSError, ValueError) as exc:
            raise LinkClosed(f"read from {self.port} failed: {exc}") from exc
        if not data:
            raise LinkClosed(f"{self.port} closed (end of file)")
        return data

    def wait_readable(self, timeout_s: float, wake_fd: int | None = None) -> bool:
        """Sleep until the port has bytes to read (True), ``wake_fd`` is readable, or ``timeout_s`` passed:
        the idle worker's one system call per wake-up instead of a poll."""
        if self._buffer:
            return True
        fd = self.fileno()
        try:
            ready, _, _ = select.select([fd] if wake_fd is None else [fd, wake_fd], [], [], max(0.0, timeout_s))
        except (OSError, ValueError) as exc:
            raise LinkClosed(f"waiting on {self.port} failed: {exc}") from exc
        return fd in ready

    def streaming_mode(self, timeout_s: float) -> StreamingReads:
        """The fd blocking, reads returning after at most ``timeout_s`` (termios VMIN 0 / VTIME): select
        and read in one system call, the streaming pump's cheapest way to wait for the printer."""
        return StreamingReads(self, timeout_s)

    def write_all(self, data: bytes) -> None:
        """Write everything, waiting for room; raw fd writes (pyserial's per-call overhead is the hot path)."""
        fd = self.fileno()
        view = memoryview(data)
        deadline = time.monotonic() + 5.0
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LinkClosed(f"write to {self.port} blocked for 5 s") from None
                select.select([], [fd], [], 0.05)
                continue
            except OSError as exc:
                raise LinkClosed(f"write to {self.port} failed: {exc}") from exc
            view = view[written:]

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


class StreamingReads:
    """Context manager: the port's fd blocking with a termios read timeout (0.1 s granularity)."""

    def __init__(self, link: SerialLink, timeout_s: float) -> None:
        self.link = link
        self.fd = link.fileno()
        self.deciseconds = max(1, min(255, round(timeout_s * 10)))
        self._saved: list | None = None

    def __enter__(self) -> StreamingReads:
        import termios

        try:
            self._saved = termios.tcgetattr(self.fd)
            attrs = termios.tcgetattr(self.fd)
            attrs[6][termios.VMIN] = 0
            attrs[6][termios.VTIME] = self.deciseconds
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
            os.set_blocking(self.fd, True)
        except (OSError, termios.error) as exc:
            raise LinkClosed(f"cannot configure {self.link.port}: {exc}") from exc
        return self

    def check_hangup(self) -> bytes:
        """After a read that returned nothing: a port that is readable yet gives no bytes hung up
        (LinkClosed); bytes that arrived just now are returned, not lost."""
        ready, _, _ = select.select([self.fd], [], [], 0)
        if not ready:
            return b""
        try:
            data = os.read(self.fd, 65536)
        except OSError as exc:
            raise LinkClosed(f"read from {self.link.port} failed: {exc}") from exc
        if not data:
            raise LinkClosed(f"{self.link.port} closed (end of file)")
        return data

    def __exit__(self, *exc: object) -> None:
        import termios

        try:
            os.set_blocking(self.fd, False)
            if self._saved is not None:
                termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
        except (OSError, termios.error):
            pass
