"""Logging for the field: the systemd journal with structured fields, and a rate limit.

Under systemd (``JOURNAL_STREAM`` names our stderr, see systemd.exec(5)) the
daemon writes each record as one datagram of the journal's *native protocol*
to ``/run/systemd/journal/socket`` (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/),
so ``journalctl -u printnode COMPONENT=printer`` or ``JOB_ID=…`` filters work
without a dependency on python-systemd.  Fields sent: MESSAGE, PRIORITY,
SYSLOG_IDENTIFIER, COMPONENT (``node.printer.worker`` -> ``printer``), JOB_ID
(when known), LOGGER, THREAD, CODE_FILE/CODE_LINE/CODE_FUNC.  Off systemd the
plain stderr format stays.

The job id comes from ``extra={"job_id": …}``, else the :data:`JOB_ID`
context variable (set with :func:`job_context` around work on one job), else a
message that starts ``job <id>`` (the runner's style).

SD-card care: :class:`RateLimitFilter` lets ``burst`` warnings (and worse) of
one call site through per ``interval_s`` and then counts the rest, reporting
the count once the window ends, so a printer that is off (relay open) and
retried every ten seconds cannot fill the journal.
"""
from __future__ import annotations

import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
SYSLOG_IDENTIFIER = "printnode"
JOB_ID: ContextVar[str | None] = ContextVar("printnode_job_id", default=None)

# syslog priorities (RFC 5424 severity), which the journal's PRIORITY field uses
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


@contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    """Tag every record logged in this context (task, thread started from it) with ``job_id``."""
    token = JOB_ID.set(job_id)
    try:
        yield
    finally:
        JOB_ID.reset(token)


def journal_stream_is_stderr() -> bool:
    """True when systemd connected our stderr to the journal (``JOURNAL_STREAM=dev:inode`` matches)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        stat = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


def component_of(logger_name: str) -> str:
    """``node.printer.worker`` -> ``printer``; ``node.daemon`` -> ``daemon``; others unchanged.

    The Pi's operations in ``node.field`` are each a component of their own:
    ``node.field.timesync`` -> ``timesync``."""
    parts = logger_name.split(".")
    if parts[0] == "node" and len(parts) > 2 and parts[1] == "field":
        return parts[2]
    if parts[0] == "node" and len(parts) > 1:
        return parts[1]
    return logger_name


def job_id_of(record: logging.LogRecord) -> str | None:
    explicit = getattr(record, "job_id", None)
    if explicit:
        return str(explicit)
    from_context = JOB_ID.get()
    if from_context:
        return from_context
    if isinstance(record.msg, str) and record.msg.startswith("job %s") and record.args:
        first = record.args[0] if isinstance(record.args, tuple) else None
        if isinstance(first, str):
            return first
    return None


def encode_field(name: str, value: str) -> bytes:
    """One field of the native protocol; values with a newline use the length-prefixed form."""
    data = value.encode("utf-8", errors="replace")
    if b"\n" in data:
        return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name.encode() + b"=" + data + b"\n"


def journal_fields(record: logging.LogRecord, message: str) -> dict[str, str]:
    fields = {
        "MESSAGE": message,
        "PRIORITY": str(_PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)),
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        "COMPONENT": str(getattr(record, "component", None) or component_of(record.name)),
        "LOGGER": record.name,
        "THREAD": record.threadName or "",
        "CODE_FILE": record.pathname,
        "CODE_LINE": str(record.lineno),
        "CODE_FUNC": record.funcName,
    }
    job_id = job_id_of(record)
    if job_id:
        fields["JOB_ID"] = job_id
    return fields


class JournalHandler(logging.Handler):
    """Send records to the journal's native socket; fall back to stderr if the socket refuses."""

    MAX_DATAGRAM = 60_000  # well under the default socket buffer; longer messages are cut

    def __init__(self, socket_path: Path = JOURNAL_SOCKET, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.socket_path = socket_path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._fallback = logging.StreamHandler(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            if len(message) > self.MAX_DATAGRAM // 2:
                message = message[: self.MAX_DATAGRAM // 2] + " …(cut)"
            datagram = b"".join(encode_field(k, v) for k, v in journal_fields(record, message).items())
            self._sock.sendto(datagram, str(self.socket_path))
        except OSError:
            self._fallback.emit(record)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


class RateLimitFilter(logging.Filter):
    """At most ``burst`` records per call site (logger, level, format string) every ``interval_s``.

    When a window with dropped records ends, the next record from that site
    carries "(N similar messages suppressed)".  Only records at ``min_level``
    or above are limited (warnings by default): a fault loop retrying every
    few seconds is what floods a card, while periodic info lines already have
    their own configured cadence (``printer.progress_interval_s``).
    """

    def __init__(self, burst: int = 20, interval_s: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic, min_level: int = logging.WARNING) -> None:
        super().__init__()
        self.min_level = min_level
        self.burst = burst
        self.interval_s = interval_s
        self._monotonic = monotonic
        self._windows: dict[tuple[str, int, str], list[float | int]] = {}  # site -> [start, count, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        site = (record.name, record.levelno, str(record.msg))
        now = self._monotonic()
        window = self._windows.get(site)
        if window is None or now - window[0] >= self.interval_s:
            dropped = int(window[2]) if window else 0
            self._windows[site] = [now, 1, 0]
            if dropped:
                record.msg = f"{record.msg} ({dropped} similar messages suppressed)"
            if len(self._windows) > 2000:  # forget old sites: bounded memory
                cutoff = now - self.interval_s
                self._windows = {k: v for k, v in self._windows.items() if v[0] >= cutoff}
            return True
        window[1] = int(window[1]) + 1
        if window[1] <= self.burst:
            return True
        window[2] = int(window[2]) + 1
        return False


def configure_daemon_logging(level: str, *, burst: int = 10, interval_s: float = 600.0) -> logging.Handler:
    """Route the root logger to the journal when systemd gave us one, else keep stderr; add the limit."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler: logging.Handler
    socket_path = Path(os.environ.get("PRINTNODE_JOURNAL_SOCKET", str(JOURNAL_SOCKET)))
    if journal_stream_is_stderr() and socket_path.exists():
        handler = JournalHandler(socket_path)
        for old in list(root.handlers):
            root.removeHandler(old)
        root.addHandler(handler)
    else:
        handler = root.handlers[0] if root.handlers else logging.StreamHandler(sys.stderr)
        if handler not in root.handlers:
            root.addHandler(handler)
    if not any(isinstance(f, RateLimitFilter) for f in handler.filters):
        handler.addFilter(RateLimitFilter(burst, interval_s))
    return handler
