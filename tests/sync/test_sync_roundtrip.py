"""A hub and a node through a real Mosquitto: jobs down, file pulled and verified, reports up once."""
from __future__ import annotations

import asyncio
from pathlib import Path

from sync_harness import gcode_file, ledger_rows, make_hub, node_config, running_node, wait_for

from node.hub.server import cancel_job, submit_job
from node.jobs import JobState


def test_job_submitted_while_node_offline_is_downloaded_and_queued_once_it_connects(mosquitto, tmp_path: Path):
    async def main() -> None:
        hub = make_hub(tmp_path / "hub", mosquitto)
        try:
            source = gcode_file(tmp_path / "part.gcode", 300_000)
            job_id = submit_job(hub.ledger, hub.files_dir, source, node_id="n1")
            await wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM jobs WHERE hub_state = 'sent'"), what="job sent")
            config = node_config(tmp_path / "n1", mosquitto, "n1", [hub.key.public_hex], chunk_bytes=64 * 1024)
            async with running_node(config) as rn:
                async def queued():
                    job = await rn.jobs.get(job_id)
                    return job is not None and job.state == JobState.QUEUED
                await wait_for(queued, what="job queued on the node")
                job = await rn.jobs.get(job_id)
                assert Path(job.file_path).read_bytes() == source.read_bytes()
                await wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM jobs WHERE job_id = ? AND version = 3",
                                                   job_id), what="hub sees version 3")
                events = ledger_rows(hub, "SELECT version, node_state FROM job_events WHERE job_id = ? ORDER BY version",
                                     job_id)
                assert [(e["version"], e["node_state"]) for e in events] == [
                    (1, "received"), (2, "downloading"), (3, "queued")]
                # cancel from the hub wins
                cancel_job(hub.ledger, job_id)

                async def cancelled():
                    job = await rn.jobs.get(job_id)
                    return job.state == JobState.CANCELLED
                await wait_for(cancelled, what="cancel applied")
                await wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM commands WHERE ok = 1"), what="command result")
                await wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM jobs WHERE wire_state = 'CANCELED'"),
                               what="hub sees CANCELED")
        finally:
            hub.stop()

    asyncio.run(main())
