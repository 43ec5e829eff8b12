"""``printnode run``: the daemon."""
from __future__ import annotations

import argparse
import asyncio
import sys

from node.commands.common import add_config_arguments, config_from_args

#: how long a thread holding the GIL may keep another waiting for it (CPython's default: 5 ms)
SWITCH_INTERVAL_S = 0.0005


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the node daemon")
    add_config_arguments(parser)
    parser.add_argument("--until-idle", action="store_true", help="exit 0 once no job is runnable or printing")
    parser.add_argument("--timeout", type=float, default=None, help="give up (exit 3) after this many real seconds")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, set_aside_bad_overrides=True)  # an unattended node always comes up
    from node.field.journal import configure_daemon_logging

    configure_daemon_logging(config.node.log_level)
    from node.field.memory import lean_web_stack, limit_malloc_arenas

    limit_malloc_arenas()  # before any thread: one malloc arena, ~2.7 MB less resident (issue #19)
    # the printer worker needs the GIL for a few microseconds after each ok; a printer's receive buffer
    # holds ~2.6 ms of the next lines at 250000 baud, and the default 5 ms before the event loop must
    # hand the GIL over left the link idle whenever the loop was busy (issue #19: link use)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if config.web.enabled:
        lean_web_stack()  # before aiohttp is imported: ~1.9 MB less resident (issue #19)
    from node.daemon import run_daemon

    return asyncio.run(run_daemon(config, until_idle=args.until_idle, timeout_s=args.timeout))
