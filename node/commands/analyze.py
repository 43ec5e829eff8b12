"""``printnode analyze FILE [--printer PROFILE] [--ambient-c C] [--json]``: time, energy, material, layers."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze", help="estimate print time (motion model + heat-up), energy profile, filament and layers")
    parser.add_argument("file", type=Path, help="G-code file")
    parser.add_argument("--printer", default="ender3", metavar="PROFILE",
                        help="built-in printer profile name or a profile .toml (default: ender3)")
    parser.add_argument("--ambient-c", type=float, default=22.0, metavar="C",
                        help="room temperature in C for heat-up and holding power (default: 22)")
    parser.add_argument("--json", action="store_true", help="print the full result as one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from node.gcode.analysis import GcodeError, analyze_file, summary_text, to_json
    from node.printer.profile import load_profile

    try:
        profile = load_profile(args.printer)
    except ValueError as exc:
        print(f"printnode analyze: --printer: {exc}", file=sys.stderr)
        return 2
    try:
        result = analyze_file(args.file, profile, ambient_c=args.ambient_c)
    except (GcodeError, ValueError) as exc:
        print(f"printnode analyze: {exc}", file=sys.stderr)
        return 1
    print(to_json(result) if args.json else summary_text(result))
    return 0
