"""``printnode virtual-printer``: a Marlin-like printer on a pseudo-terminal, with fault switches."""
from __future__ import annotations

import argparse
import ctypes
import signal
import sys
import threading
from pathlib import Path

from node.clock import Clock, ClockSpec
from node.printer.profile import load_profile
from node.printer.virtual import Faults, VirtualPrinter, serve_pty


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("virtual-printer", help="run a Marlin-like printer on a pty and print its path")
    parser.add_argument("--profile", default="ender3", help="printer profile name or TOML path")
    parser.add_argument("--time-scale", type=float, default=None, help="sim seconds per real second (0 = instant)")
    parser.add_argument("--clock", default=None, help="ClockSpec JSON shared with the daemon")
    parser.add_argument("--ambient-c", type=float, default=22.0)
    parser.add_argument("--planner-depth", type=int, default=None, help="moves in the planner (profile: 16)")
    parser.add_argument("--command-queue", type=int, default=None, help="BUFSIZE: queued commands (profile: 4)")
    parser.add_argument("--rx-buffer-bytes", type=int, default=None, help="receive buffer (profile: 128)")
    parser.add_argument("--advanced-ok", action="store_true", help="answer 'ok N<line> P<planner> B<queue>'")
    parser.add_argument("--baud", type=int, default=0, help="emulate this link rate (0: as fast as the pty)")
    parser.add_argument("--port-file", type=Path, default=None, help="write the pty path here once ready")
    parser.add_argument("--link", type=Path, default=None,
                        help="publish the port as this symlink (stable across the disconnect fault)")
    parser.add_argument("--command-log", type=Path, default=None, help="append every executed command here")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="(used by the daemon) ignore Ctrl-C and exit when the parent process dies")
    faults = parser.add_argument_group("fault switches")
    faults.add_argument("--corrupt-in", type=float, default=0.0, help="P(one byte of a received line flipped)")
    faults.add_argument("--corrupt-out", type=float, default=0.0, help="P(one byte of a reply line flipped)")
    faults.add_argument("--drop-ok", type=float, default=0.0, help="P(an ok is never sent)")
    faults.add_argument("--reset-after-lines", type=int, default=0, help="reboot after N numbered lines")
    faults.add_argument("--reset-on-open", action="store_true", help="reboot when a host opens the port (DTR)")
    faults.add_argument("--runaway-at-c", type=float, default=0.0, help="thermal runaway when the hotend passes C")
    faults.add_argument("--dead-heater", action="store_true", help="the hotend heater produces no heat")
    faults.add_argument("--silence-after-lines", type=int, default=0, help="stop answering after N lines")
    faults.add_argument("--silence-s", type=float, default=0.0, help="... for S real seconds (0: forever)")
    faults.add_argument("--disconnect-after-lines", type=int, default=0, help="drop the port after N lines")
    faults.add_argument("--wedge-after-lines", type=int, default=0,
                        help="stop executing after N lines (temperatures and M112 still work)")
    faults.add_argument("--lose-lines", type=lambda text: tuple(int(n) for n in text.split(",") if n.strip()),
                        default=(), metavar="N,N,...",
                        help="lose these numbered lines whole on the wire, once each (as Marlin's Linux HAL does)")
    faults.add_argument("--seed", type=int, default=0, help="random seed of the probabilistic faults")
    parser.set_defaults(func=run)


def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGTERM): Linux only; elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def faults_from_args(args: argparse.Namespace) -> Faults:
    return Faults(**{name: getattr(args, name) for name in Faults.names()})


def run(args: argparse.Namespace) -> int:
    if args.clock:
        clock = Clock.from_spec(ClockSpec.model_validate_json(args.clock))
    else:
        clock = Clock(time_scale=1.0 if args.time_scale is None else args.time_scale)
    if args.time_scale is not None:
        clock.time_scale = args.time_scale
    profile = load_profile(args.profile)
    stop = threading.Event()
    path, _, _ = serve_pty(lambda write: VirtualPrinter(
        profile, clock, write, ambient_c=args.ambient_c, planner_depth=args.planner_depth,
        command_log=args.command_log, command_queue=args.command_queue,
        rx_buffer_bytes=args.rx_buffer_bytes, advanced_ok=args.advanced_ok, baud=args.baud,
        faults=faults_from_args(args)), stop, link_path=args.link)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.exit_with_parent:
        # the daemon stops us in order; a terminal's Ctrl-C reaches the whole group, so ignore it,
        # and let the kernel end us if the daemon is killed outright (kill -9, power-loss tests)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent()
    else:
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.port_file:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(path + "\n")
        tmp.replace(args.port_file)
    print(f"virtual printer ({profile.name}, time scale {clock.time_scale:g}) on {path}", flush=True)
    sys.stdout.flush()
    while not stop.wait(0.5):
        pass
    return 0
