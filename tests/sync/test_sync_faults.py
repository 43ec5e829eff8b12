"""Faults: the broker killed and restarted mid-transfer and mid-telemetry; the node SIGKILLed at random.

What must hold: the job completes, and every report the node committed is in the hub's ledger
exactly once (job events keyed by job and version; telemetry by sample time; messages by id).
"""
from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sync_harness import gcode_file, ledger_rows, make_hub, node_config, running_node, wait_for

from node.events import TelemetrySample
from node.hub.server import submit_job
from node.jobs import JobState


def test_broker_killed_and_restarted_during_transfer_and_telemetry_loses_and_duplicates_nothing(mosquitto,
                                                                                                tmp_path: Path):
    async def main() -> None:
        hub = make_hub(tmp_path / "hub", mosquitto)
        try:
            source = gcode_file(tmp_path / "big.gcode", 2_000_000)
            job_id = submit_job(hub.ledger, hub.files_dir, source, node_id="n1")
            config = node_config(tmp_path / "n1", mosquitto, "n1", [hub.key.public_hex], chunk_bytes=16 * 1024,
                                 chunk_window=2, telemetry_batch_s=600)
            async with running_node(config) as rn:
                t0 = 1_800_000_000.0
                sent = 0

                async def feed(n: int) -> None:
                    nonlocal sent
                    for _ in range(n):
                        await rn.node.send_event("telemetry_sample", TelemetrySample(
                            t_s=t0 + 60 * sent, source="sim", pv_w=100.0 + sent % 50, soc_pct=50.0))
                        sent += 1

                # kill the broker from inside the transfer, as chunks cross 15 %, 40 % and 70 %:
                # deterministic "mid-transfer", however fast the loopback is
                size = source.stat().st_size
                thresholds = [0.15, 0.4, 0.7]
                kills, outages = 0, []
                original = rn.sync.transfers.on_chunk

                async def on_chunk_with_faults(*args, **kwargs):
                    nonlocal kills
                    complete = await original(*args, **kwargs)
                    state = rn.sync.transfers.status().get(job_id)
                    if thresholds and state and state["done_bytes"] >= thresholds[0] * size and not complete:
                        thresholds.pop(0)
                        await feed(57)
                        mosquitto.kill()
                        kills += 1
                        outages.append(asyncio.ensure_future(outage()))
                    return complete

                async def outage() -> None:
                    await feed(23)  # offline: into the outbox only
                    await asyncio.sleep(random.uniform(0.05, 0.3))
                    await asyncio.to_thread(mosquitto.start)

                rn.sync.transfers.on_chunk = on_chunk_with_faults

                async def queued():
                    job = await rn.jobs.get(job_id)
                    return job is not None and job.state == JobState.QUEUED
                await wait_for(queued, timeout_s=60, what="job queued after the transfer")
                await asyncio.gather(*outages)
                await feed(40)
                batch = rn.sync.batcher.flush(time.time())
                await rn.sync.outbox.put_telemetry(batch, time.time())
                rn.sync._outbox_dirty.set()

                async def drained():
                    return (await rn.sync.outbox.stats())["messages"] == 0
                await wait_for(drained, timeout_s=60, what="outbox drained")
                assert Path((await rn.jobs.get(job_id)).file_path).read_bytes() == source.read_bytes()
                node_transitions = await rn.store.run(lambda c: [
                    (r["job_id"], r["version"]) for r in c.execute("SELECT job_id, version FROM job_transitions")])
            events = ledger_rows(hub, "SELECT job_id, version FROM job_events")
            assert sorted((e["job_id"], e["version"]) for e in events) == sorted(node_transitions)
            times = [r["t_s"] for r in ledger_rows(hub, "SELECT t_s FROM telemetry WHERE node_id = 'n1' ORDER BY t_s")]
            assert times == [t0 + 60 * i for i in range(sent)]
            assert kills == 3 and mosquitto.starts == 4
        finally:
            hub.stop()

    asyncio.run(main())


def test_node_sigkilled_at_random_points_loses_nothing_it_committed(mosquitto, tmp_path: Path):
    async def main() -> None:
        hub = make_hub(tmp_path / "hub", mosquitto)
        rng = random.Random(7)
        config = node_config(tmp_path / "n1", mosquitto, "n1", [hub.key.public_hex], telemetry_batch_s=300,
                             ack_timeout_s=2)
        script = Path(__file__).with_name("node_proc.py")
        try:
            for _ in range(4):
                proc = subprocess.Popen([sys.executable, str(script), config.model_dump_json()],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                assert proc.stdout is not None
                await asyncio.to_thread(proc.stdout.readline)  # "started"
                await asyncio.sleep(rng.uniform(0.2, 0.8))
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 5)
            # the last will says the node is gone
            await wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM nodes WHERE node_id = 'n1' AND online = 0"),
                           what="last will seen by the hub")
            db = sqlite3.connect(config.state_dir / "node.sqlite")
            committed = sorted(db.execute("SELECT job_id, version FROM job_transitions").fetchall())
            db.close()
            assert len(committed) >= 3
            async with running_node(config) as rn:  # restarted for good: it sends what it kept
                async def drained():
                    return (await rn.sync.outbox.stats())["messages"] == 0
                await wait_for(drained, timeout_s=60, what="outbox drained after the restarts")
            events = sorted((e["job_id"], e["version"]) for e in ledger_rows(hub, "SELECT job_id, version FROM job_events"))
            assert events == committed  # every committed transition, exactly once (and nothing invented)
            dup = ledger_rows(hub, "SELECT COUNT(*) AS n, COUNT(DISTINCT msg_id) AS d FROM received")[0]
            assert dup["n"] == dup["d"]
        finally:
            hub.stop()

    asyncio.run(main())


def test_hub_sigkilled_while_reports_flow_files_each_exactly_once(mosquitto, tmp_path: Path):
    """The hub commits before it acks: a kill between the two means a resend, which dedup absorbs."""
    from node.sync.signing import SigningKey

    async def main() -> None:
        hub_dir = tmp_path / "hub"
        SigningKey.generate().save(hub_dir / "hub.key")
        script = Path(__file__).with_name("hub_proc.py")
        rng = random.Random(11)
        config = node_config(tmp_path / "n1", mosquitto, "n1", [], ack_timeout_s=1)
        async with running_node(config) as rn:
            await wait_for(lambda: rn.sync.connected.is_set(), what="node connected")
            for _ in range(4):
                hub_proc = subprocess.Popen([sys.executable, str(script), str(hub_dir), str(mosquitto.port)],
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                assert hub_proc.stdout is not None
                await asyncio.to_thread(hub_proc.stdout.readline)
                deadline = time.monotonic() + rng.uniform(0.2, 0.6)
                while time.monotonic() < deadline:  # reports flow while the hub dies
                    job = await rn.jobs.create("local", "cli", state=JobState.QUEUED)
                    await rn.jobs.transition(job.id, JobState.PRINTING, "start")
                    await rn.jobs.transition(job.id, JobState.COMPLETED, "done")
                hub_proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(hub_proc.wait, 5)
            hub = make_hub(hub_dir, mosquitto)  # the hub back for good
            try:
                async def drained():
                    return (await rn.sync.outbox.stats())["messages"] == 0
                await wait_for(drained, timeout_s=60, what="every report acked")
                committed = await rn.store.run(lambda c: sorted(
                    (r["job_id"], r["version"]) for r in c.execute("SELECT job_id, version FROM job_transitions")))
                events = sorted((e["job_id"], e["version"]) for e in ledger_rows(hub, "SELECT job_id, version FROM job_events"))
                assert events == committed
                records = ledger_rows(hub, "SELECT COUNT(*) AS n FROM job_records")[0]["n"]
                assert records == len({j for j, _ in committed})
            finally:
                hub.stop()

    asyncio.run(main())
