"""One daemon per state directory: an exclusive lock held for the daemon's whole life.

A second ``printnode run`` on the same state directory (a shell beside the systemd service, a
``make run`` left open) must stop before it touches anything.  The control socket's own check came
far too late: by then the second daemon had opened the same store, started its own virtual printer
and charge controller, opened a printer port and started its runner (with a broker, an MQTT session
under the first one's client id), and on its way out it deleted the first one's virtual-printer port
file.  So the lock is the first thing the daemon takes.

``flock(2)`` on ``printnode.pid``: the kernel drops the lock when the process dies however it dies
(SIGKILL, power cut), so there is never a stale lock to clean up; the file also holds the pid, for
the message.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "printnode.pid"


class AlreadyRunning(RuntimeError):
    """Another daemon holds the state directory; the message names it and what to do."""


class StateDirLock:
    """The state directory's lock, held from :meth:`acquire` until :meth:`release` (or the process ends)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> StateDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise AlreadyRunning(
                f"another printnode ({who}) is already running on {self.path.parent}: stop it first "
                "(sudo systemctl stop printnode, or Ctrl-C in the shell that runs it), or give this one its "
                "own --state-dir") from None
        os.ftruncate(fd, 0)  # only now: the holder's pid stays readable until the lock is ours
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock
        self._fd = None
