"""Helpers of the fault suite: process trees (the daemon and the children it started), devices that
are unplugged and plugged back (a charge controller on a by-id style link)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.clock import ClockSpec


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc), e.g. the virtual printer the daemon started."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(x) for x in handle.read().split()]
    except OSError:
        pass
    return found


def sigkill_tree(pid: int) -> None:
    """SIGKILL a daemon like a power cut would stop it, then its orphaned children (systemd's
    KillMode=control-group does the latter on a Pi)."""
    kids = children(pid)
    os.kill(pid, signal.SIGKILL)
    for kid in kids:
        try:
            os.kill(kid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_sim_controller(clock: ClockSpec, initial_soc: float = 0.8,
                         timeout_s: float = 60.0) -> tuple[subprocess.Popen[bytes], str]:
    """A simulated charge controller process (pvlib, VE.Direct on a pty) of its own, as a USB device
    would be: the daemon reads it through ``telemetry.source = "vedirect"``.  Returns the process and
    its pty; SIGKILL it to pull the cable (the pty vanishes with it)."""
    from node.power.config import SimulatedControllerSection
    from node.power.simcontroller import SimControllerArgs
    from node.power.sources.simulated import _read_line

    args = SimControllerArgs(clock=clock, controller=SimulatedControllerSection(initial_soc=initial_soc))
    process = subprocess.Popen([sys.executable, "-m", "node.power.simcontroller"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(args.model_dump_json().encode() + b"\n")
    process.stdin.flush()  # stdin stays open: its EOF would stop the controller
    line = _read_line(process.stdout, timeout_s)
    if not line.startswith("PTY "):
        process.kill()
        process.wait()
        raise RuntimeError(f"simulated controller did not start (said {line!r})")
    return process, line[4:].strip()


def plug(link: Path, target: str) -> None:
    """Point a stable name at a device, atomically, as udev does for /dev/serial/by-id on plug."""
    tmp = link.with_suffix(".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def unplug(process: subprocess.Popen[bytes], link: Path) -> None:
    """Pull the cable: the device dies with its pty, and udev removes the by-id name."""
    process.kill()
    process.wait(10)
    link.unlink(missing_ok=True)
