"""A hub and a node through a real Mosquitto: jobs down, file pulled and verified, reports up once."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from sync_harness import gcode_file, ledger_rows, make_hub, node_config, plan_event, running_node, start_node, wait_for

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


def _publish(hub, topic: str, payload: bytes) -> None:
    hub.client.publish(topic, payload, qos=1).wait_for_publish(5)


def test_bad_manifests_are_rejected_with_their_reason_and_reported_to_the_hub(mosquitto, tmp_path: Path):
    from node.sync import protocol as p
    from node.sync.signing import SigningKey

    async def main() -> None:
        hub = make_hub(tmp_path / "hub", mosquitto)
        config = node_config(tmp_path / "n1", mosquitto, "n1", [hub.key.public_hex])
        try:
            async with running_node(config) as rn:
                await wait_for(lambda: rn.sync.connected.is_set(), what="node connected")
                now = time.time()

                def manifest(job_id: str, seq: int, expires_s: float = now + 600) -> p.JobManifest:
                    return p.JobManifest(node_id="n1", seq=seq, issued_s=now, expires_s=expires_s, hub_time_s=now,
                                         job_id=job_id, name=job_id, file_sha256="1" * 64, file_bytes=100)

                good = hub.key.sign(manifest("good", 100))
                tampered = hub.key.sign(manifest("tampered", 101))
                tampered = tampered.model_copy(update={"signed": tampered.signed.replace('"file_bytes":100',
                                                                                         '"file_bytes":99')})
                cases = {
                    "tampered": tampered.model_dump_json(),
                    "unsigned": json.dumps({"signed": manifest("unsigned", 102).model_dump_json(),
                                            "key_id": hub.key.key_id, "sig": ""}),
                    "expired": hub.key.sign(manifest("expired", 103, expires_s=now - 1)).model_dump_json(),
                    "stranger": SigningKey.generate().sign(manifest("stranger", 104)).model_dump_json(),
                    "replayed": hub.key.sign(manifest("replayed", 100)).model_dump_json(),  # reuses good's seq
                }
                _publish(hub, p.down_topic("n1", "job"), good.model_dump_json().encode())
                async def has_good():
                    return await rn.jobs.get("good") is not None
                await wait_for(has_good, what="good job created")
                for payload in cases.values():
                    _publish(hub, p.down_topic("n1", "job"), payload.encode())
                await wait_for(lambda: len(ledger_rows(hub, "SELECT 1 FROM job_events WHERE version = 0")) == 5,
                               what="five rejections in the ledger")
                reasons = {r["job_id"]: r["reason"] for r in
                           ledger_rows(hub, "SELECT job_id, reason FROM job_events WHERE version = 0")}
                assert reasons["tampered"].startswith("bad signature")
                assert reasons["unsigned"].startswith("unsigned")
                assert reasons["expired"].startswith("expired")
                assert reasons["stranger"].startswith("unknown key")
                assert reasons["replayed"].startswith("replayed")
                for job_id in cases:
                    assert await rn.jobs.get(job_id) is None
                # a signed command cannot be replayed either: the second copy is answered, not executed again
                cmd = hub.key.sign(p.Command(node_id="n1", seq=200, issued_s=now, expires_s=now + 60, hub_time_s=now,
                                             command_id="c" * 32, args=p.CancelArgs(job_id="good")))
                for _ in range(2):
                    _publish(hub, p.down_topic("n1", "command"), cmd.model_dump_json().encode())
                await wait_for(lambda: len(ledger_rows(hub, "SELECT 1 FROM received WHERE kind = 'command_result'"))
                               == 2, what="two command results")
                events = ledger_rows(hub, "SELECT node_state FROM job_events WHERE job_id = 'good' ORDER BY version")
                assert [e["node_state"] for e in events].count("cancelled") == 1
                # the hub's time was recorded
                hub_t = await rn.store.run(lambda c: rn.store.get_meta(c, "sync.hub_time_s"))
                assert float(hub_t) == pytest.approx(now)
        finally:
            hub.stop()

    asyncio.run(main())


def _sub_once(broker, topic: str) -> dict:
    if not shutil.which("mosquitto_sub"):
        pytest.skip("mosquitto_sub not installed (apt-get install mosquitto-clients; make test does)")
    out = subprocess.run(["mosquitto_sub",
                          "-h", broker.host, "-p", str(broker.port), "-t", topic, "-C", "1", "-W", "5"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_retained_plain_json_state_is_readable_by_mosquitto_sub_under_mqtt_311(mosquitto, tmp_path: Path):
    from node.events import TelemetrySample

    async def main() -> None:
        config = node_config(tmp_path / "n1", mosquitto, "n1", [], protocol="3.1.1", state_interval_s=0,
                             ha_discovery=True)
        async with running_node(config) as rn:
            await wait_for(lambda: rn.sync.connected.is_set(), what="node connected")
            await rn.node.send_event("telemetry_sample", TelemetrySample(t_s=time.time(), source="sim", pv_w=321.5,
                                                                         soc_pct=64.0, battery_v=13.1))
            await rn.node.send_event("plan_updated", plan_event(time.time(), 1.8e9, planned=2))
            online = await asyncio.to_thread(_sub_once, mosquitto, "printnode/v1/n1/state/online")
            power = await asyncio.to_thread(_sub_once, mosquitto, "printnode/v1/n1/state/power")
            plan = await asyncio.to_thread(_sub_once, mosquitto, "printnode/v1/n1/state/plan")
            ha = await asyncio.to_thread(_sub_once, mosquitto, "homeassistant/sensor/n1/soc/config")
            assert online["online"] is True
            assert power["pv_w"] == 321.5 and power["soc_pct"] == 64.0
            assert plan["next_window_start_s"] == 1.8e9
            assert ha["state_topic"] == "printnode/v1/n1/state/power"
        # a clean stop leaves "offline" retained
        offline = await asyncio.to_thread(_sub_once, mosquitto, "printnode/v1/n1/state/online")
        assert offline["online"] is False

    asyncio.run(main())


def test_fleet_job_goes_to_the_capable_node_with_the_earliest_energy_window(mosquitto, tmp_path: Path):
    from node.sync import protocol as p

    async def main() -> None:
        hub = make_hub(tmp_path / "hub", mosquitto)
        try:
            now = time.time()
            nodes = {}
            # early window but a 0.4 mm nozzle; later window; latest window
            for node_id, window in (("early", now + 600), ("mid", now + 3600), ("late", now + 7200)):
                cfg = node_config(tmp_path / node_id, mosquitto, node_id, [hub.key.public_hex],
                                  **({"materials": ["PLA", "PETG"]} if node_id != "early" else {}))
                nodes[node_id] = await start_node(cfg)
            for node_id, rn in nodes.items():
                await wait_for(lambda rn=rn: rn.sync.connected.is_set(), what="connected")
                start = {"early": now + 600, "mid": now + 3600, "late": now + 7200}[node_id]
                await rn.node.send_event("plan_updated", plan_event(now, start))
            await wait_for(lambda: len(ledger_rows(hub, "SELECT 1 FROM nodes WHERE next_window_start_s IS NOT NULL"
                                                        " AND capabilities IS NOT NULL")) == 3, what="plans")
            # each hello carried the node's place and array, for the fleet map and per-site forecasts
            sites = [p.NodeSite.model_validate_json(r["site"]) for r in ledger_rows(hub, "SELECT site FROM nodes")]
            assert [(s.latitude_deg, s.longitude_deg, s.timezone) for s in sites] == [
                (cfg.site.latitude, cfg.site.longitude, cfg.site.timezone)] * 3
            source = gcode_file(tmp_path / "petg.gcode", 2000)
            job_id = submit_job(hub.ledger, hub.files_dir, source,
                                requirements=p.PrinterRequirements(material="PETG", max_hotend_c=240))
            await wait_for(lambda: ledger_rows(hub, "SELECT node_id FROM jobs WHERE node_id IS NOT NULL"),
                           what="assigned")
            assert ledger_rows(hub, "SELECT node_id FROM jobs WHERE job_id = ?", job_id)[0]["node_id"] == "mid"

            async def queued_on_mid():
                job = await nodes["mid"].jobs.get(job_id)
                return job is not None and job.state == JobState.QUEUED
            await wait_for(queued_on_mid, what="queued on mid")
            impossible = submit_job(hub.ledger, hub.files_dir, source,
                                    requirements=p.PrinterRequirements(max_hotend_c=900))
            await wait_for(lambda: "no eligible node" in ledger_rows(
                hub, "SELECT reason FROM jobs WHERE job_id = ?", impossible)[0]["reason"], what="refusal reason")
            for rn in nodes.values():
                await rn.stop()
        finally:
            hub.stop()

    asyncio.run(main())


def test_a_transfer_resumes_after_the_node_restarts_and_a_lost_one_begins_again(mosquitto, tmp_path: Path):
    async def main() -> None:
        hub = make_hub(tmp_path / "hub", mosquitto)
        try:
            source = gcode_file(tmp_path / "part.gcode", 400_000)
            job_id = submit_job(hub.ledger, hub.files_dir, source, node_id="n1")
            config = node_config(tmp_path / "n1", mosquitto, "n1", [hub.key.public_hex], chunk_bytes=8192,
                                 chunk_window=1)
            rn = await start_node(config)
            reached = asyncio.Event()
            original = rn.sync.transfers.on_chunk

            async def hold_after_a_quarter(*args):  # noqa: ANN002
                complete = await original(*args)
                if rn.sync.transfers.status().get(job_id, {}).get("done_bytes", 0) > 100_000:
                    reached.set()
                    await asyncio.Event().wait()  # hold the transfer here until the node stops
                return complete

            rn.sync.transfers.on_chunk = hold_after_a_quarter
            await wait_for(reached.is_set, what="a quarter of the file")
            await rn.stop()  # stop mid-transfer (a clean stop; the SIGKILL case is in test_sync_faults)
            done_before = await asyncio.to_thread(_done_bytes, config.state_dir / "node.sqlite", job_id)
            assert 100_000 <= done_before < source.stat().st_size
            served_before = hub.counters["chunks_served"]
            async with running_node(config) as rn:
                async def queued():
                    job = await rn.jobs.get(job_id)
                    return job.state == JobState.QUEUED
                await wait_for(queued, what="queued after the restart")
            # it resumed from the committed prefix instead of starting over
            assert hub.counters["chunks_served"] - served_before <= (source.stat().st_size - done_before) // 8192 + 3
            # a transfer row lost between "downloading" and the transfer (a kill there): begun again at start
            other = submit_job(hub.ledger, hub.files_dir, gcode_file(tmp_path / "b.gcode", 20_000, seed=2),
                               node_id="n1")
            async with running_node(config) as rn:
                async def downloading():
                    job = await rn.jobs.get(other)
                    return job is not None and job.state in (JobState.DOWNLOADING, JobState.QUEUED)
                await wait_for(downloading, what="second job arrives")
            await asyncio.to_thread(_forget_transfer, config.state_dir / "node.sqlite", other)
            async with running_node(config) as rn:
                async def queued_other():
                    job = await rn.jobs.get(other)
                    return job.state == JobState.QUEUED
                await wait_for(queued_other, what="lost transfer begun again and finished")
        finally:
            hub.stop()

    asyncio.run(main())


def _done_bytes(db_path: Path, job_id: str) -> int:
    import sqlite3

    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT done_bytes FROM sync_transfers WHERE job_id = ?", (job_id,)).fetchone()[0]


def _forget_transfer(db_path: Path, job_id: str) -> None:
    import sqlite3

    with sqlite3.connect(db_path) as db:
        db.execute("DELETE FROM sync_transfers WHERE job_id = ?", (job_id,))
        db.execute("UPDATE jobs SET state = 'downloading' WHERE id = ? AND state = 'queued'", (job_id,))
