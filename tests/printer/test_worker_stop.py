"""A print request never outlives the printer worker: one still queued when the worker stops (or submitted
after it ended) ends ``interrupted`` with a reason, so neither the job runner nor a stopping daemon waits for
ever (issue #19: a ``make run`` daemon once never exited on SIGTERM, its shutdown waiting on a thread that
waited on a request the ended worker would never finish)."""
from __future__ import annotations

import asyncio
from pathlib import Path

from node.clock import Clock
from node.config import NodeConfig
from node.node import Node
from node.printer.printer import Printer
from node.printer.worker import PrinterWorker, PrintRequest
from node.store import Store
from tests.printer.helpers import FAST, RecordingSink


def test_requests_queued_when_the_worker_stops_end_interrupted(tmp_path: Path) -> None:
    # a printer that is not plugged in: the worker retries the open and never takes the request
    worker = PrinterWorker(str(tmp_path / "ttyUNPLUGGED"), 115200, RecordingSink(), settings=FAST)
    worker.start()
    request = PrintRequest(job_id="queued", path=tmp_path / "job.gcode")
    worker.submit(request)
    worker.stop()
    worker.join(5)
    assert not worker.is_alive()
    assert request.done.is_set() and request.outcome is not None
    assert request.outcome.status == "interrupted" and "stopped" in request.outcome.reason
    late = PrintRequest(job_id="late", path=tmp_path / "job.gcode")
    worker.submit(late)  # after the thread ended: answered at once, not queued for nobody
    assert late.done.is_set() and late.outcome is not None and late.outcome.status == "interrupted"


def test_print_job_returns_when_the_printer_stops(tmp_path: Path) -> None:
    config = NodeConfig.model_validate({"node": {"state_dir": str(tmp_path / "state")},
                                        "printer": {"port": str(tmp_path / "ttyUNPLUGGED")}})

    async def scenario() -> str:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        store = Store(config.state_dir / "printnode.sqlite3").open()
        node = Node(config.node, Clock(1.0))
        printer = node.add(Printer(node, config.printer, store))
        await node.start()
        try:
            printing = asyncio.ensure_future(printer.print_job("j1", tmp_path / "job.gcode"))
            await asyncio.sleep(0.2)
            assert not printing.done()
            await printer.stop()
            outcome = await asyncio.wait_for(printing, 5)
            return outcome.status
        finally:
            await node.stop()
            store.close()

    assert asyncio.run(scenario()) == "interrupted"
