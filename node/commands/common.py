"""Arguments and helpers shared by several subcommands."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from node.config import ConfigError, NodeConfig, load_config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, default=None,
                        help="node.toml (default: embedded defaults; /etc/printnode/node.toml on a Pi)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set clock.time_scale=60 (repeatable)")
    parser.add_argument("--state-dir", type=Path, default=None, help="shorthand for --set node.state_dir=DIR")


def config_from_args(args: argparse.Namespace, set_aside_bad_overrides: bool = False) -> NodeConfig:
    """Load the config named by the common arguments, or exit 2 naming the bad key (the daemon
    sets a bad override file aside instead: see node.config)."""
    sets = list(args.sets)
    if args.state_dir is not None:
        sets.append(f"node.state_dir={json.dumps(str(args.state_dir))}")
    try:
        return load_config(args.config, sets, set_aside_bad_overrides=set_aside_bad_overrides)
    except ConfigError as exc:
        print(f"printnode: config error in {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=None, default=str)
    sys.stdout.write("\n")
