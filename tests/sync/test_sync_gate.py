"""Issue #14, finding 1: a job from the hub passes the same gate as a local one.  It went
received -> downloading -> queued -> printing with M502, M500 and M104 S400 in it."""
from __future__ import annotations

import asyncio
from pathlib import Path

from sync_harness import gcode_file, ledger_rows, make_hub, node_config, running_node, wait_for

from node.hub.server import submit_job
from node.jobs import JobState


def test_a_hub_job_the_policy_refuses_is_rejected_with_its_line_and_the_hub_hears_why(mosquitto, tmp_path: Path):
    async def main() -> None:
        hub = make_hub(tmp_path / "hub", mosquitto)
        try:
            bad = gcode_file(tmp_path / "bad.gcode", 2000)
            with bad.open("a") as handle:
                handle.write("M502\nM500\nM104 S400\n")
            good = gcode_file(tmp_path / "good.gcode", 2000, seed=2)
            bad_id = submit_job(hub.ledger, hub.files_dir, bad, node_id="n1")
            good_id = submit_job(hub.ledger, hub.files_dir, good, node_id="n1")
            async with running_node(node_config(tmp_path / "n1", mosquitto, "n1", [hub.key.public_hex])) as rn:
                async def settled():
                    jobs = [await rn.jobs.get(bad_id), await rn.jobs.get(good_id)]
                    return all(j is not None and j.state in (JobState.REJECTED, JobState.QUEUED) for j in jobs)
                await wait_for(settled, what="both files verified and gated")
                rejected, queued = await rn.jobs.get(bad_id), await rn.jobs.get(good_id)
                assert rejected.state == JobState.REJECTED and "M502 is not allowed" in rejected.reason
                assert queued.state == JobState.QUEUED
                await wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM jobs WHERE job_id = ? AND wire_state = "
                                                        "'REJECTED'", bad_id), what="the hub hears the refusal")
        finally:
            hub.stop()

    asyncio.run(main())
