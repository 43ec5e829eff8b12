"""Arguments and helpers shared by several subcommands."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # node.config (every section's pydantic model) loads only when a command reads the config
    from node.config import NodeConfig


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, default=None,
                        help="node.toml (default: embedded defaults; /etc/printnode/node.toml on a Pi)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set clock.time_scale=60 (repeatable)")
    parser.add_argument("--state-dir", type=Path, default=None, help="shorthand for --set node.state_dir=DIR")


def config_from_args(args: argparse.Namespace, set_aside_bad_overrides: bool = False) -> NodeConfig:
    """Load the config named by the common arguments, or exit 2 naming the bad key (the daemon
    sets a bad override file aside instead: see node.config)."""
    from node.config import ConfigError, load_config

    try:
        return load_config(args.config, _sets(args), set_aside_bad_overrides=set_aside_bad_overrides)
    except ConfigError as exc:
        print(f"printnode: config error in {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def control_socket_from_args(args: argparse.Namespace) -> Path:
    """The control socket the common arguments name: read from node.toml and ``--set`` alone
    (no pydantic: ``printnode status`` starts in a fraction of the time), else from the full config."""
    from node.controlclient import control_socket_path

    return control_socket_path(args.config, _sets(args)) or config_from_args(args).control_socket


def _sets(args: argparse.Namespace) -> list[str]:
    sets = list(args.sets)
    if args.state_dir is not None:
        sets.append(f"node.state_dir={json.dumps(str(args.state_dir))}")
    return sets


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=None, default=str)
    sys.stdout.write("\n")
