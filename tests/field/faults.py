"""Helpers of the fault suite: process trees (the daemon and the children it started)."""
from __future__ import annotations

import os
import signal


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
