"""``printnode print FILE --port PORT``: stream one G-code file to a Marlin-compatible printer.

For installers and bench work: no daemon, no store.  It refuses a port another
process holds (the daemon opens its port exclusively), checks the file against
the ``[safety]`` policy first, exits 0 when every line was executed (``M400``
acknowledged) and non-zero with the reason otherwise.  ``--json`` prints one
object with at least ``lines``, ``resends`` and ``seconds`` (plus the host CPU
spent while streaming, which is what bench/stream.py measures).
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


class _CliSink:
    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.emergency = ""

    def on_state(self, state: str, detail: str) -> None:
        if self.verbose:
            print(f"printer: {state} {detail}", file=sys.stderr)

    def on_temperatures(self, report: object) -> None:
        pass

    def on_progress(self, job_id: str, byte_offset: int, bytes_total: int, lines_sent: int) -> None:
        if self.verbose and bytes_total:
            print(f"\r{100.0 * byte_offset / bytes_total:5.1f} % {lines_sent} lines", end="", file=sys.stderr)

    def on_checkpoint(self, job_id: str, checkpoint: object) -> None:
        pass

    def on_emergency(self, reason: str) -> None:
        self.emergency = reason


def run(args: argparse.Namespace) -> int:
    from node.commands.common import config_from_args
    from node.daemon import make_gate
    from node.printer.link import LinkClosed
    from node.printer.policy import PolicyViolation
    from node.printer.printer import stream_settings
    from node.printer.worker import FirmwareReset, PrinterFault, PrinterWorker, PrintRequest

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    if not args.file.is_file():
        print(f"printnode print: {args.file}: no such file", file=sys.stderr)
        return 2
    if not args.no_safety_check:
        try:
            make_gate(config).check(args.file)
        except PolicyViolation as exc:
            print(f"printnode print: refused by the safety policy: {exc}", file=sys.stderr)
            return 3
    settings = stream_settings(config.printer, ping_pong=args.ping_pong)
    sink = _CliSink(verbose=not args.json)
    worker = PrinterWorker(args.port, args.baud or config.printer.baud, sink, settings=settings,
                           safety=config.safety)
    request = PrintRequest(job_id="cli", path=args.file)
    try:
        worker._open()  # exclusively: refused if the daemon holds the port
        worker._connect()
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        wall_before = time.monotonic()
        outcome = worker._stream(request)
        wall_s = time.monotonic() - wall_before
        usage_after = resource.getrusage(resource.RUSAGE_SELF)
    except (LinkClosed, PrinterFault, FirmwareReset) as exc:
        print(f"\nprintnode print: {exc}", file=sys.stderr)
        worker.link.close()
        return 1
    finally:
        worker.link.close()
    cpu_s = (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
    lines = outcome.lines_sent
    summary = {
        "status": outcome.status, "reason": outcome.reason, "lines": lines, "resends": outcome.resends,
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
        print(f"\n{outcome.status}: {outcome.reason}; {lines} lines, {outcome.resends} resends, "
              f"{wall_s:.1f} s", file=sys.stderr)
    return 0 if outcome.status == "completed" else 1
