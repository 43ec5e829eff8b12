"""``printnode``: parse arguments, call the library, print text or ``--json``.  Thin."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from node import __version__
from node.commands import COMMAND_MODULES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="printnode", description="Solar Print Node: an off-grid, solar-powered 3D-print node.")
    parser.add_argument("--version", action="version", version=f"printnode {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"node.commands.{module_name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=getattr(args, "log_level", None) or logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `printnode queue list | head`
        return 0
    except Exception as exc:  # a person never reads a traceback: a sentence, and the details in the log
        # the daemon's journal keeps the traceback for whoever debugs it; a person at a prompt gets the sentence
        logging.getLogger("printnode").log(logging.ERROR if args.command == "run" else logging.DEBUG,
                                           "%s failed", args.command, exc_info=True)
        print(f"printnode {args.command}: failed: {_sentence(exc)} (run with PRINTNODE_DEBUG=1 for details)",
              file=sys.stderr)
        if os.environ.get("PRINTNODE_DEBUG"):
            raise
        return 1


def _sentence(exc: BaseException) -> str:
    """One line for an error a command did not expect: its message, not its class path."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return text[:300]
