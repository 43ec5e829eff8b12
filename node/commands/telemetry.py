"""``printnode telemetry``: print live normalized samples from a power source, for installers."""
from __future__ import annotations

import argparse
import logging
import sys
import time

from node.commands.common import add_config_arguments, config_from_args, print_json

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "telemetry", help="print live power samples (check a charge controller's wiring)",
        description="Read the power source directly (not through the daemon) and print normalized samples.")
    parser.add_argument("--source", choices=["vedirect", "epever", "renogy", "ina219", "ina226", "simulated"],
                        help="default: telemetry.source from the config")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--port", help="serial device (vedirect, epever, renogy)")
    where.add_argument("--bus", type=int, help="I2C bus number (ina219, ina226)")
    parser.add_argument("--address", type=lambda s: int(s, 0), help="I2C address, e.g. 0x40")
    parser.add_argument("--baud", type=int)
    parser.add_argument("--unit", type=int, help="Modbus slave address")
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    parser.add_argument("--samples", type=int, default=0, help="stop after N samples (default: run until Ctrl-C)")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from node.clock import Clock
    from node.power.battery import SocEstimator
    from node.power.config import TelemetrySection
    from node.power.sources import SourceError
    from node.power.sources.factory import make_source
    from node.power.telemetry import ReadingRejected, to_sample

    config = config_from_args(args)
    telemetry = config.telemetry
    data = telemetry.model_dump()
    for key in ("source", "port", "baud", "unit"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    for key in ("bus", "address"):
        if getattr(args, key) is not None:
            data["ina"][key] = getattr(args, key)
    try:
        telemetry = TelemetrySection.model_validate(data)
    except ValueError as exc:
        print(f"printnode telemetry: {exc}", file=sys.stderr)
        return 2
    clock = Clock(config.clock.time_scale,
                  None if config.clock.start == "now" else _iso_to_s(config.clock.start))
    try:
        source = make_source(telemetry, config.battery, config.site, config.array, clock.spec())
        source.open()
    except (SourceError, ValueError) as exc:
        print(f"printnode telemetry: {exc}", file=sys.stderr)
        return 1
    estimator = SocEstimator(config.battery)
    printed, rejected, silent_since = 0, 0, time.monotonic()
    try:
        # --samples N counts readings, accepted or rejected: a source whose every reading is
        # implausible must end the check (it said why, line by line), not hang it
        while args.samples <= 0 or printed + rejected < args.samples:
            try:
                reading = source.read(telemetry.read_timeout_s)
            except SourceError as exc:
                print(f"printnode telemetry: {exc}", file=sys.stderr)
                return 1
            if reading is None:
                if time.monotonic() - silent_since > telemetry.stale_after_s:
                    print(f"printnode telemetry: no data from {telemetry.source} for "
                          f"{telemetry.stale_after_s:.0f} s (wiring? baud? port?)", file=sys.stderr)
                    return 1
                continue
            silent_since = time.monotonic()
            try:
                sample = to_sample(reading, clock.time(), estimator, config.battery)
            except ReadingRejected as exc:
                print(f"printnode telemetry: reading rejected: {exc}", file=sys.stderr)
                rejected += 1
                continue
            if args.json:
                print_json(sample.model_dump())
            else:
                print(_line(sample))
            sys.stdout.flush()
            printed += 1
            if telemetry.source in ("epever", "renogy", "ina219", "ina226"):
                time.sleep(telemetry.poll_interval_s)
    finally:
        source.close()
    if rejected and not printed:
        print(f"printnode telemetry: all {rejected} readings were rejected (see why above)", file=sys.stderr)
        return 1
    return 0


def _iso_to_s(value: str) -> float:
    from datetime import UTC, datetime

    parsed = datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _fmt(value: float | None, unit: str, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f} {unit}"


def _line(sample) -> str:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    t = datetime.fromtimestamp(sample.t_s, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    return (f"{t}Z {sample.source:9s} PV {_fmt(sample.pv_w, 'W', 0):>6s} {_fmt(sample.pv_v, 'V'):>7s}  "
            f"battery {_fmt(sample.battery_v, 'V', 2):>8s} {_fmt(sample.battery_a, 'A', 2):>8s}  "
            f"SoC {_fmt(sample.soc_pct, '%'):>7s}  load {_fmt(sample.load_w, 'W', 0):>6s}  "
            f"{sample.charge_state or '-'}{'  STALE' if sample.stale else ''}{'  ' + sample.error if sample.error else ''}")
