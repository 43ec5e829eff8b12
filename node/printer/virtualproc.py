"""The VirtualPrinter component: runs ``printnode virtual-printer`` as a child process.

A separate process, like real hardware: the daemon reaches it only through
the pty, so ``make run`` and the tests exercise the real serial path.  It
shares the node's sim time through a :class:`~node.clock.ClockSpec`.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from node.child import python_module_command
from node.node import Component, Node
from node.printer.config import VirtualPrinterSection

log = logging.getLogger(__name__)


class VirtualPrinterProcess(Component):
    name = "virtual_printer"
    section = "printer.virtual"

    def __init__(self, node: Node, config: VirtualPrinterSection, *, profile: str, port_file: Path) -> None:
        super().__init__(node, config)
        self.config: VirtualPrinterSection = config
        self.profile = profile
        self.port_file = port_file
        self.process: asyncio.subprocess.Process | None = None
        self.port = ""

    async def start(self) -> None:
        self.port_file.unlink(missing_ok=True)
        args = [*python_module_command("node"), "virtual-printer",
                "--profile", self.profile,
                "--clock", self.node.clock.spec().model_dump_json(),
                "--ambient-c", str(self.config.ambient_c),
                "--port-file", str(self.port_file), "--exit-with-parent"]
        if self.config.baud:
            args += ["--baud", str(self.config.baud)]
        if self.config.planner_depth:
            args += ["--planner-depth", str(self.config.planner_depth)]
        self.process = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL)
        for _ in range(200):
            if self.port_file.exists() and self.port_file.read_text().strip():
                self.port = self.port_file.read_text().strip()
                log.info("virtual printer (pid %d) on %s", self.process.pid, self.port)
                return
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the virtual printer did not start (exit code {self.process.returncode})")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        Path(self.port_file).unlink(missing_ok=True)
