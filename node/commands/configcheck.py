"""``printnode check-config FILE``: validate a node.toml and name every bad key."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from node.config import ConfigError, load_config
from node.printer.profile import load_profile


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("check-config", help="validate a config file; name each bad key and why")
    parser.add_argument("file", type=Path)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file, use_overrides=False)
        load_profile(config.printer.profile)
    except ConfigError as exc:
        print(f"{exc.source}: invalid", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"{args.file}: invalid\n  printer.profile: {exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: ok")
    return 0
