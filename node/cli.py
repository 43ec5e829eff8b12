"""``printnode``: parse arguments, call the library, print text or ``--json``.  Thin."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from node import __version__
from node.commands import COMMANDS


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with ``command``'s module loaded (its arguments and function); every other
    command is a stub with its help line, so ``--help`` lists them all without importing them.
    ``command=None`` (or an unknown name, which argparse then refuses) loads none."""
    parser = argparse.ArgumentParser(
        prog="printnode", description="Solar Print Node: an off-grid, solar-powered 3D-print node.")
    parser.add_argument("--version", action="version", version=f"printnode {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    loaded = COMMANDS[command][0] if command in COMMANDS else None
    for name, (module_name, help_line) in COMMANDS.items():
        if module_name == loaded:
            if name not in subparsers.choices:  # the module registers all its commands at its first one
                importlib.import_module(f"node.commands.{module_name}").register(subparsers)
        else:
            subparsers.add_parser(name, help=help_line)
    return parser


def command_of(argv: list[str]) -> str | None:
    """The command ``argv`` runs: its first word that is not an option (``printnode`` has no
    option that takes a value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(command_of(argv))
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
