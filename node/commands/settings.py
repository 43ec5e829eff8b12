"""``printnode config show | set KEY=VALUE``: the effective config, and run-time overrides.

``set`` goes through the running daemon when there is one (it owns the state
directory); otherwise it writes ``<state_dir>/overrides.toml`` itself.  Either
way the value is validated first and never written to /etc.
"""
from __future__ import annotations

import argparse
import sys

import tomli_w

from node.commands.common import add_config_arguments, config_from_args, print_json
from node.config import ConfigError, write_override
from node.controlclient import ControlClient, ControlError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="show the effective config, or set a run-time override")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="the effective config (defaults + file + overrides + --set)")
    add_config_arguments(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)
    setter = sub.add_parser("set", help="persist KEY=VALUE in the state directory's override file")
    add_config_arguments(setter)
    setter.add_argument("assignment", metavar="KEY=VALUE")
    setter.set_defaults(func=cmd_set)


def cmd_show(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    data = config.model_dump(mode="json", exclude_none=True)
    print_json(data) if args.json else print(tomli_w.dumps(data), end="")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    try:
        result = ControlClient(config.control_socket).request({"cmd": "config_set", "assignment": args.assignment})
        print(f"saved {result['saved']} in {result['file']} (the daemon applies it at its next start)")
        return 0
    except ControlError as exc:
        if "no printnode daemon" not in str(exc):
            print(f"printnode: {exc}", file=sys.stderr)
            return 2
    try:
        saved_in = write_override(config, args.assignment)
    except ConfigError as exc:
        print(f"printnode: {'; '.join(exc.problems)}", file=sys.stderr)
        return 2
    print(f"saved {args.assignment} in {saved_in} (applies at the next start)")
    return 0
