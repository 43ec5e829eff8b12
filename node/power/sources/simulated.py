"""The simulated source: start the simulated charge controller process and read it as VE.Direct.

Everything after the pty is the real path: pyserial, :class:`VEDirectParser`, the field
map.  The child process (:mod:`node.power.simcontroller`) is the only one that imports
pvlib.  ``set_printer_w`` tells it how much the printer draws.
"""
from __future__ import annotations

import logging
import os
import select
import subprocess
import time
from typing import IO

from node.child import python_module_command
from node.clock import ClockSpec
from node.power.config import ArraySection, BatterySection, SimulatedControllerSection, SiteSection
from node.power.sources import Reading, SourceError
from node.power.sources.vedirect import VEDirectSource

log = logging.getLogger(__name__)
START_TIMEOUT_S = 60.0  # importing pvlib and pandas on a Pi Zero takes a while


class SimulatedSource:
    name = "simulated"

    def __init__(self, clock: ClockSpec, site: SiteSection, array: ArraySection, battery: BatterySection,
                 controller: SimulatedControllerSection, printer_w_file: str | None = None) -> None:
        from node.power.simcontroller import SimControllerArgs  # pvlib-free at import

        self.args = SimControllerArgs(clock=clock, site=site, array=array, battery=battery, controller=controller,
                                      printer_w_file=printer_w_file)
        self._process: subprocess.Popen[bytes] | None = None
        self._inner: VEDirectSource | None = None
        self._printer_w = 0.0
        self.port: str | None = None

    def open(self) -> None:
        self.close()
        process = subprocess.Popen(
            python_module_command("node.power.simcontroller"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None, close_fds=True)
        self._process = process
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(self.args.model_dump_json().encode() + b"\n")
            process.stdin.write(f"printer_w {self._printer_w}\n".encode())
            process.stdin.flush()
        except OSError as exc:
            self.close()
            raise SourceError(f"simulated controller did not start: {exc}") from None
        line = _read_line(process.stdout, START_TIMEOUT_S)
        if not line.startswith("PTY "):
            code = process.poll()
            self.close()
            raise SourceError(f"simulated controller did not report its port (exit code {code}, said {line!r})")
        self.port = line[4:].strip()
        self._inner = VEDirectSource(self.port, source_name="simulated")
        self._inner.open()
        log.info("simulated charge controller (pid %d) on %s", process.pid, self.port)

    def set_printer_w(self, printer_w: float) -> None:
        self._printer_w = max(0.0, float(printer_w))
        process = self._process
        if process is not None and process.stdin is not None and process.poll() is None:
            try:
                process.stdin.write(f"printer_w {self._printer_w:.1f}\n".encode())
                process.stdin.flush()
            except (OSError, ValueError):
                pass  # the process died; read() reports it

    def read(self, timeout_s: float) -> Reading | None:
        if self._inner is None or self._process is None:
            raise SourceError("simulated controller is not running")
        if self._process.poll() is not None:
            raise SourceError(f"simulated controller exited with code {self._process.returncode}")
        return self._inner.read(timeout_s)

    def counters(self) -> dict[str, int]:
        return self._inner.counters() if self._inner is not None else {}

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.write(b"quit\n")
                process.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def _read_line(stream: IO[bytes], timeout_s: float) -> str:
    """One line from a child's stdout, or '' after ``timeout_s`` real seconds."""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout_s
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            break
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")
