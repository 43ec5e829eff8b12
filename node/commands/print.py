"""``printnode print FILE --port PORT``: stream one G-code file to a Marlin-compatible printer.

For installers and bench work: no daemon, no store.  It refuses a port another
process holds (the daemon opens its port exclusively), checks the file against
the ``[safety]`` policy first, exits 0 when every line was executed (``M400``
acknowledged) and non-zero with the reason on any failure (1; 130 after Ctrl-C,
which cancels: heaters off).  Progress goes to stderr: on a terminal one line
redrawn in place with the rate and the time left, otherwise a plain line every
few seconds.  ``--json`` prints JSON lines on stdout instead: ``{"type":
"progress", ...}`` about once a second, then the summary (``"type": "summary"``,
at least ``lines``, ``resends`` and ``seconds``, plus the host CPU spent while
streaming, which is what bench/stream.py measures).
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

from node.commands.common import add_config_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("print", help="stream one G-code file to a printer (no daemon)")
    parser.add_argument("file", type=Path)
    parser.add_argument("--port", required=True, help="device path, /dev/serial/by-id/..., or 'auto'")
    parser.add_argument("--baud", type=int, default=None, help="default: printer.baud")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.add_argument("--ping-pong", action="store_true", help="one line in flight (slowest, most compatible)")
    parser.add_argument("--no-safety-check", action="store_true", help="skip the [safety] G-code policy")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


#: without a terminal, a plain progress line at most this often (seconds)
PLAIN_EVERY_S = 5.0
#: --json progress lines at most this often (seconds)
JSON_EVERY_S = 1.0


class _CliSink:
    """Progress for a person (a terminal: one line redrawn; a log: plain lines) or a program (JSON lines)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode  # "tty", "plain" or "json"
        self.emergency = ""
        self.started = time.monotonic()
        self.last_shown = 0.0
        self.drawn = False

    def on_state(self, state: str, detail: str, asked_by: str = "node") -> None:
        if self.mode == "json":
            print(json.dumps({"type": "state", "state": state, "detail": detail}), flush=True)
        else:
            self._end_line()
            print(f"printer: {state} {detail}", file=sys.stderr)

    def on_temperatures(self, report: object) -> None:
        pass

    def on_progress(self, job_id: str, byte_offset: int, bytes_total: int, lines_sent: int) -> None:
        if not bytes_total:
            return
        now = time.monotonic()
        every_s = {"tty": 0.0, "plain": PLAIN_EVERY_S, "json": JSON_EVERY_S}[self.mode]
        done = byte_offset >= bytes_total
        if now - self.last_shown < every_s and not done:
            return
        self.last_shown = now
        elapsed_s = max(1e-6, now - self.started)
        fraction = min(1.0, byte_offset / bytes_total)
        rate = lines_sent / elapsed_s
        eta_s = elapsed_s * (1 - fraction) / fraction if fraction > 0 else None
        if self.mode == "json":
            print(json.dumps({"type": "progress", "percent": round(100 * fraction, 2), "lines": lines_sent,
                              "lines_per_s": round(rate, 1), "eta_s": None if eta_s is None else round(eta_s, 1)}),
                  flush=True)
            return
        text = (f"{100 * fraction:5.1f} %  {lines_sent} lines  {rate:.0f} lines/s  "
                f"{'left ' + _duration(eta_s) if eta_s is not None else ''}")
        if self.mode == "tty":
            print(f"\r{text:<60}", end="", file=sys.stderr, flush=True)
            self.drawn = True
        else:
            print(text, file=sys.stderr, flush=True)

    def _end_line(self) -> None:
        if self.drawn:
            print(file=sys.stderr)
            self.drawn = False

    def on_checkpoint(self, job_id: str, checkpoint: object) -> None:
        pass

    def on_emergency(self, reason: str) -> None:
        self.emergency = reason


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run(args: argparse.Namespace) -> int:
    from node.commands.common import config_from_args
    from node.gate import JobGate
    from node.printer.link import LinkClosed
    from node.printer.policy import PolicyViolation
    from node.printer.printer import stream_settings
    from node.printer.profile import load_profile
    from node.printer.worker import FirmwareReset, PrinterFault, PrinterWorker, PrintRequest

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    if not args.file.is_file():
        print(f"printnode print: {args.file}: no such file", file=sys.stderr)
        return 2
    try:
        profile = load_profile(config.printer.profile)
    except (OSError, ValueError) as exc:
        print(f"printnode print: printer profile {config.printer.profile!r}: {exc}", file=sys.stderr)
        return 2
    if not args.no_safety_check:
        try:
            JobGate.for_printer(config.safety, config.printer, profile.rx_buffer_bytes).check(args.file)
        except PolicyViolation as exc:
            print(f"printnode print: refused by the safety policy: {exc}", file=sys.stderr)
            return 3
    settings = stream_settings(config.printer, ping_pong=args.ping_pong)
    sink = _CliSink("json" if args.json else "tty" if sys.stderr.isatty() else "plain")
    worker = PrinterWorker(args.port, args.baud or config.printer.baud, sink, settings=settings,
                           safety=config.safety, profile=profile)
    request = PrintRequest(job_id="cli", path=args.file)
    try:
        worker._open()  # exclusively: refused if the daemon holds the port
        worker._connect()
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        wall_before = time.monotonic()
        try:
            outcome = worker._stream(request)
        except KeyboardInterrupt:
            worker.cancel()  # Ctrl-C: the cancel path (heaters off, within seconds)
            outcome = worker._stop_job(request, wall_before, 0, 0)
            sink._end_line()
            print(f"printnode print: interrupted: {outcome.reason}", file=sys.stderr)
            return 130
        wall_s = time.monotonic() - wall_before
        usage_after = resource.getrusage(resource.RUSAGE_SELF)
    except (LinkClosed, PrinterFault, FirmwareReset) as exc:
        sink._end_line()
        print(f"printnode print: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        sink._end_line()
        print("printnode print: interrupted before the print started", file=sys.stderr)
        return 130
    except OSError as exc:
        sink._end_line()
        print(f"printnode print: {exc}", file=sys.stderr)
        return 1
    finally:
        worker.link.close()
    cpu_s = (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
    lines = outcome.lines_sent
    summary = {
        "type": "summary", "status": outcome.status, "reason": outcome.reason, "lines": lines, "resends": outcome.resends,
        "seconds": round(wall_s, 4), "lines_per_s": round(lines / wall_s, 1) if wall_s > 0 else None,
        "cpu_s": round(cpu_s, 4), "cpu_us_per_line": round(1e6 * cpu_s / lines, 2) if lines else None,
        "max_rss_mb": round(usage_after.ru_maxrss / 1024, 1), "advanced_ok": worker.advanced_ok,
        "user_s": round(usage_after.ru_utime - usage_before.ru_utime, 4),
        "sys_s": round(usage_after.ru_stime - usage_before.ru_stime, 4),
        "waits": usage_after.ru_nvcsw - usage_before.ru_nvcsw,
        "reads": worker.pump.reads if worker.pump else None, "writes": worker.pump.writes if worker.pump else None,
        "fast_refills": worker.pump.fast_refills if worker.pump else None,
        "firmware": worker.firmware,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        sink._end_line()
        print(f"{outcome.status}: {outcome.reason}; {lines} lines, {outcome.resends} resends, "
              f"{wall_s:.1f} s", file=sys.stderr)
    return 0 if outcome.status == "completed" else 1
