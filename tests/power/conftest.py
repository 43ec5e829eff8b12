"""Fixtures: real pseudo-terminals (the device writes the master side, the source opens the slave)."""
from __future__ import annotations

import os
import threading
import tty
from collections.abc import Iterator

import pytest


class PtyPair:
    def __init__(self) -> None:
        self.master_fd, self.slave_fd = os.openpty()
        tty.setraw(self.slave_fd)  # no CR/LF translation: VE.Direct and Modbus are binary-clean
        self.slave_name = os.ttyname(self.slave_fd)

    def write_in_background(self, data: bytes, chunk: int = 37) -> threading.Thread:
        """Write ``data`` in odd-sized chunks from a thread (the pty buffer is small)."""
        def _write() -> None:
            for i in range(0, len(data), chunk):
                os.write(self.master_fd, data[i:i + chunk])

        thread = threading.Thread(target=_write, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        for fd in (self.master_fd, self.slave_fd):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def pty_pair() -> Iterator[PtyPair]:
    pair = PtyPair()
    yield pair
    pair.close()
