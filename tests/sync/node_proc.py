"""A node (jobs + sync) in its own process, generating reports until it is killed.

``python node_proc.py CONFIG_JSON`` — the tests SIGKILL it at random moments.  Each round creates
a local job and moves it through queued -> printing -> completed while telemetry samples flow, so
every kind of outbox write is in progress at some point.
"""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from sync_harness import start_node  # noqa: E402

from node.config import NodeConfig  # noqa: E402
from node.events import TelemetrySample  # noqa: E402
from node.jobs import JobState  # noqa: E402


async def main(config_json: str) -> None:
    rn = await start_node(NodeConfig.model_validate_json(config_json))
    print("started", flush=True)
    t_s = time.time()
    while True:
        job = await rn.jobs.create("local", "cli", state=JobState.QUEUED)
        await rn.jobs.transition(job.id, JobState.PRINTING, "start")
        for _ in range(10):
            t_s += 60
            await rn.node.send_event("telemetry_sample", TelemetrySample(
                t_s=t_s, source="sim", pv_w=200.0, printer_w=120.0, soc_pct=70.0))
        await rn.jobs.transition(job.id, JobState.COMPLETED, "done")
        await asyncio.sleep(0.005)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
