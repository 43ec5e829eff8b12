"""End to end with the real daemon (`printnode run`, virtual printer on a pty) and a real Mosquitto.

A job is submitted to the hub while the node is offline; the node starts, connects, pulls the file,
prints it and reports.  The broker is killed and restarted during the transfer and during the
print (telemetry flowing); the job still completes and every report is in the hub's ledger exactly
once.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from sync_harness import ledger_rows, make_hub

from tests.conftest import start_daemon, stop_daemon, wait_for


def printable_padded_gcode(path: Path, moves: int, padding_bytes: int) -> Path:
    """A short print (no heating) made large by comment lines, which the streamer never sends."""
    lines = ["G28", "G90", "G1 X0 Y0 F600"]
    lines += [f"G1 X{10 * ((i + 1) % 2)} Y{i * 0.01:.2f}" for i in range(moves)]
    pad = "; " + "padding " * 12
    lines += [pad] * (padding_bytes // (len(pad) + 1))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_job_submitted_while_offline_is_printed_once_the_node_connects_through_broker_restarts(mosquitto,
                                                                                               tmp_path: Path):
    from node.hub.server import submit_job

    hub = make_hub(tmp_path / "hub", mosquitto)
    daemon = None
    try:
        source = printable_padded_gcode(tmp_path / "part.gcode", moves=40, padding_bytes=3_000_000)
        job_id = submit_job(hub.ledger, hub.files_dir, source, node_id="e2e")
        wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM jobs WHERE hub_state = 'sent'"), what="manifest sent")
        daemon = start_daemon(tmp_path / "node", "node.id=e2e", "jobs.queue_sample_when_empty=false",
                              "clock.time_scale=20", f"sync.broker_port={mosquitto.port}",
                              "sync.broker_host=127.0.0.1", f'sync.hub_public_keys=["{hub.key.public_hex}"]',
                              "sync.chunk_bytes=16384", "sync.chunk_window=1", "sync.reconnect_max_s=1",
                              "sync.ack_timeout_s=3", "sync.chunk_timeout_s=2", "sync.telemetry_batch_s=60")
        # the broker dies twice while the file moves...
        for served in (40, 120):
            wait_for(lambda s=served: hub.counters["chunks_served"] >= s, what=f"{served} chunks served")
            mosquitto.kill()
            time.sleep(0.3)
            mosquitto.start()

        # ...and once while the job prints (telemetry and progress flowing)
        def node_state() -> str | None:
            rows = ledger_rows(hub, "SELECT node_state FROM jobs WHERE job_id = ?", job_id)
            return rows[0]["node_state"] if rows else None
        wait_for(lambda: node_state() in ("printing", "completed"), timeout_s=60, what="printing")
        mosquitto.kill()
        time.sleep(0.5)
        mosquitto.start()
        wait_for(lambda: node_state() == "completed", timeout_s=90, what="job completed, seen by the hub")
        wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM job_records WHERE job_id = ?", job_id), what="job record")
        record = json.loads(ledger_rows(hub, "SELECT record FROM job_records WHERE job_id = ?", job_id)[0]["record"])
        assert record["outcome"] == "SUCCEEDED" and record["started_s"] <= record["finished_s"]
        assert ledger_rows(hub, "SELECT wire_state FROM jobs WHERE job_id = ?", job_id)[0]["wire_state"] == "SUCCEEDED"
        wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM telemetry WHERE node_id = 'e2e'"), timeout_s=60,
                 what="telemetry batches in the ledger")
        node_file = tmp_path / "node" / "files" / f"{job_id}.gcode"
        assert node_file.read_bytes() == source.read_bytes()
        assert stop_daemon(daemon) == 0
        daemon = None
        db = sqlite3.connect(tmp_path / "node" / "printnode.sqlite3")
        committed = sorted(db.execute("SELECT job_id, version FROM job_transitions").fetchall())
        unsent = db.execute("SELECT COUNT(*) FROM sync_outbox WHERE kind = 'job_state'").fetchone()[0]
        db.close()
        events = sorted((e["job_id"], e["version"]) for e in ledger_rows(hub, "SELECT job_id, version FROM job_events"))
        assert unsent == 0
        assert events == [tuple(c) for c in committed]  # every transition exactly once
        history = [e["node_state"] for e in ledger_rows(
            hub, "SELECT node_state FROM job_events WHERE job_id = ? ORDER BY version", job_id)]
        assert history[:3] == ["received", "downloading", "queued"] and history[-1] == "completed"
        assert "printing" in history
        assert mosquitto.starts == 4
    finally:
        if daemon is not None:
            stop_daemon(daemon)
        hub.stop()


def press_ha_button(broker, node_id: str, word: str) -> None:  # noqa: ANN001
    """What Home Assistant's button does: publish its payload_press on the node's ha/command topic."""
    import shutil
    import subprocess

    import pytest

    from node.sync.protocol import ha_command_topic

    if not shutil.which("mosquitto_pub"):
        pytest.skip("mosquitto_pub not installed (apt-get install mosquitto-clients; make test does)")
    subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t",
                    ha_command_topic(node_id), "-m", word], check=True, capture_output=True, timeout=10)


def test_hub_cancel_wins_over_a_print_in_progress(mosquitto, tmp_path: Path):
    from node.hub import fleet
    from node.hub.server import cancel_job, submit_job

    hub = make_hub(tmp_path / "hub", mosquitto)
    daemon = None
    try:
        source = printable_padded_gcode(tmp_path / "long.gcode", moves=3000, padding_bytes=0)
        job_id = submit_job(hub.ledger, hub.files_dir, source, node_id="e2c")
        daemon = start_daemon(tmp_path / "node", "node.id=e2c", "jobs.queue_sample_when_empty=false",
                              "clock.time_scale=5", f"sync.broker_port={mosquitto.port}",
                              "sync.broker_host=127.0.0.1", f'sync.hub_public_keys=["{hub.key.public_hex}"]',
                              "sync.state_interval_s=5")

        def node_state() -> str | None:
            rows = ledger_rows(hub, "SELECT node_state FROM jobs WHERE job_id = ?", job_id)
            return rows[0]["node_state"] if rows else None
        wait_for(lambda: node_state() == "printing", timeout_s=60, what="printing")
        # the retained documents carry what the fleet view shows: temperatures, battery voltage
        wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM nodes WHERE node_id = 'e2c' AND hotend_c IS NOT NULL"
                                          " AND bed_target_c IS NOT NULL AND battery_v IS NOT NULL"), timeout_s=60,
                 what="temperatures and battery voltage at the hub")
        assert fleet.list_nodes(hub.ledger)[0].current_job == job_id
        # Home Assistant's buttons (docs/protocol.md): a plain word on ha/command, signed by the hub
        wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM nodes WHERE current_job = ? AND job_version IS NOT NULL",
                                     job_id), what="the hub knows the job's version")
        press_ha_button(mosquitto, "e2c", "pause")
        wait_for(lambda: node_state() == "paused", timeout_s=60, what="paused by the Home Assistant button")
        press_ha_button(mosquitto, "e2c", "resume")
        wait_for(lambda: node_state() == "printing", timeout_s=60, what="resumed by the Home Assistant button")
        cancel_job(hub.ledger, job_id)
        wait_for(lambda: node_state() == "cancelled", timeout_s=60, what="cancelled on the node")
        # the printer document still names the job, as cancelled: the fleet view shows no current job
        wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM nodes WHERE current_job = ? AND job_state = 'cancelled'",
                                     job_id), what="the printer document of the cancelled job")
        assert fleet.list_nodes(hub.ledger)[0].current_job is None
        wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM commands WHERE kind = 'cancel' AND answered_s IS NOT NULL"),
                 what="result")
        result = ledger_rows(hub, "SELECT ok, detail FROM commands WHERE kind = 'cancel'")[0]
        assert result["ok"] == 1, result
        assert [r["ok"] for r in ledger_rows(hub, "SELECT ok FROM commands WHERE kind IN ('pause', 'resume')"
                                                  " ORDER BY created_s")] == [1, 1]
        status = daemon.request({"cmd": "status"})
        assert status["components"]["printer"]["state"] != "printing"
        assert status["components"]["runner"]["current_job"] is None
    finally:
        if daemon is not None:
            stop_daemon(daemon)
        hub.stop()
