"""The port disappears mid-print (USB unplugged) and reappears: the job is interrupted, the worker reconnects."""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from node.clock import Clock
from node.printer.profile import load_profile
from node.printer.virtual import Faults, VirtualPrinter, serve_pty
from node.printer.worker import PrinterWorker, PrintRequest
from tests.conftest import wait_for
from tests.printer.helpers import FAST, RecordingSink, write_job


def test_link_loss_interrupts_and_the_worker_reconnects_when_the_port_reappears(tmp_path: Path) -> None:
    write_job(tmp_path / "job.gcode", 3000)
    stop = threading.Event()
    link = tmp_path / "ttyPRINTER"
    path, printer, _ = serve_pty(lambda write: VirtualPrinter(
        load_profile("ender3"), Clock(0), write, faults=Faults(disconnect_after_lines=500)), stop, link_path=link)
    sink = RecordingSink()
    worker = PrinterWorker(path, 115200, sink, settings=dataclasses.replace(FAST, connect_timeout_s=5))
    try:
        worker.start()
        assert worker.connected.wait(10)
        request = PrintRequest(job_id="r", path=tmp_path / "job.gcode")
        worker.submit(request)
        assert request.done.wait(30)
        assert request.outcome is not None and request.outcome.status == "interrupted"
        assert "link lost" in request.outcome.reason
        wait_for(lambda: sink.states.count(("ready", str(link))) >= 2, timeout_s=30,
                 what="the worker to reconnect to the new port")
        assert any(state == "disconnected" for state, _ in sink.states)
    finally:
        worker.stop()
        worker.join(10)
        stop.set()
