"""Two ``hub serve`` workers on one PostgreSQL ledger and an MQTT v5 shared subscription, with a real node.

One worker is SIGKILLed while reports flow: the reports it held were not acked, the node's outbox
resends them, the other worker commits them; nothing is lost and nothing is filed twice.  A fleet
job is signed once and reaches the node once, its file served by whichever worker gets the request.
"""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from sync_harness import Broker, gcode_file, node_config, running_node, wait_for

from node.hub.backends import open_ledger
from node.hub.server import submit_job
from node.jobs import JobState
from node.sync.signing import SigningKey


def start_worker(hub_dir: Path, url: str, broker: Broker, name: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "node", "hub", "--dir", str(hub_dir), "--ledger", url, "serve",
                             "--broker-host", broker.host, "--broker-port", str(broker.port), "--share-group", "hubs",
                             "--client-id", name, "--forecast", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    # its log (stderr, merged here) may say "hub: connected" before the serving line: read up to that line
    seen = [proc.stdout.readline() for _ in range(1)]
    while "hub: serving" not in seen[-1] and seen[-1] and len(seen) < 20:
        seen.append(proc.stdout.readline())
    line = seen[-1]
    assert "worker " + name + " of group hubs" in line and "ledger postgresql" in line, seen
    return proc


def test_a_worker_killed_mid_stream_loses_and_duplicates_nothing(mosquitto: Broker, postgres_server, tmp_path: Path):
    url = postgres_server.create_database("workers")
    hub_dir = tmp_path / "hub"
    key = SigningKey.generate()
    key.save(hub_dir / "hub.key")
    ledger = open_ledger(url)
    workers = [start_worker(hub_dir, url, mosquitto, f"w{i}") for i in range(2)]

    def rows(sql: str, *args: object) -> list[dict]:
        return ledger.read(lambda c: [dict(r) for r in c.execute(sql, args).fetchall()])

    async def main() -> None:
        config = node_config(tmp_path / "n1", mosquitto, "n1", [key.public_hex], ack_timeout_s=1,
                             chunk_bytes=16 * 1024)
        async with running_node(config) as rn:
            await wait_for(lambda: rn.sync.connected.is_set(), what="node connected")
            await wait_for(lambda: rows("SELECT 1 FROM nodes WHERE capabilities IS NOT NULL"), what="hello filed")
            source = gcode_file(tmp_path / "part.gcode", 200_000)
            fleet_job = await asyncio.to_thread(submit_job, ledger, hub_dir / "files", source)

            async def queued() -> bool:
                job = await rn.jobs.get(fleet_job)
                return job is not None and job.state == JobState.QUEUED
            await wait_for(queued, timeout_s=60, what="fleet job downloaded by chunks and queued")
            assert Path((await rn.jobs.get(fleet_job)).file_path).read_bytes() == source.read_bytes()

            kill_at = time.monotonic() + 1.0
            killed = False
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:  # reports flow while worker 0 dies
                job = await rn.jobs.create("local", "cli", state=JobState.QUEUED)
                await rn.jobs.transition(job.id, JobState.PRINTING, "start")
                await rn.jobs.transition(job.id, JobState.COMPLETED, "done")
                if not killed and time.monotonic() >= kill_at:
                    workers[0].send_signal(signal.SIGKILL)
                    killed = True
                await asyncio.sleep(0.01)
            assert workers[0].wait(10) == -signal.SIGKILL

            async def drained() -> bool:
                return (await rn.sync.outbox.stats())["messages"] == 0
            await wait_for(drained, timeout_s=90, what="every report acked by the surviving worker")
            committed = await rn.store.run(lambda c: sorted(
                (r["job_id"], r["version"]) for r in c.execute("SELECT job_id, version FROM job_transitions")))
            events = sorted((e["job_id"], e["version"]) for e in rows("SELECT job_id, version FROM job_events"))
            assert events == committed
            received = rows("SELECT COUNT(*) AS n, COUNT(DISTINCT msg_id) AS d FROM received")[0]
            assert received["n"] == received["d"] > len(committed) // 2
            assert len(rows("SELECT 1 FROM job_records")) == len({j for j, _ in committed} - {fleet_job})
            assert rows("SELECT node_id, hub_state FROM jobs WHERE job_id = ?", fleet_job) == [
                {"node_id": "n1", "hub_state": "sent"}]
            assert (await rn.jobs.get(fleet_job)).version == 3  # received, downloading, queued: one manifest

    try:
        asyncio.run(main())
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(20)
        ledger.close()
