"""``printnode hub keygen | provision | submit | status | cancel`` and key rotation end to end."""
from __future__ import annotations

import argparse
import asyncio
import json
import tomllib
from pathlib import Path

import pytest
from sync_harness import gcode_file, ledger_rows, make_hub, node_config, running_node, wait_for

from node.commands import hub as hub_cli
from node.hub.dispatcher import Candidate, choose_node
from node.jobs import JobState
from node.sync import protocol as p
from node.sync.signing import SigningKey


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="printnode")
    hub_cli.register(parser.add_subparsers())
    args = parser.parse_args(["hub", *argv])
    code = args.func(args)
    return code, capsys.readouterr().out


def test_keygen_provision_submit_status_cancel(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    hub_dir = str(tmp_path / "hub")
    code, out = run_cli(capsys, "--dir", hub_dir, "keygen")
    public = out.strip().splitlines()[-1]
    assert code == 0 and len(public) == 64
    assert run_cli(capsys, "--dir", hub_dir, "keygen")[0] == 1  # no silent overwrite
    code, out = run_cli(capsys, "--dir", hub_dir, "provision", "farm-7", "--broker-host", "broker.example")
    provisioned = tomllib.loads(out)
    assert provisioned["node"]["id"] == "farm-7"
    assert provisioned["sync"]["hub_public_keys"] == [public] and provisioned["sync"]["username"] == "farm-7"
    from node.config import validate

    validate(provisioned, "provisioned")  # a node accepts what provisioning prints
    assert run_cli(capsys, "--dir", hub_dir, "provision", "Bad_Name")[0] == 2
    gcode = gcode_file(tmp_path / "a.gcode", 3000)
    code, out = run_cli(capsys, "--dir", hub_dir, "submit", str(gcode), "--node", "farm-7", "--material", "PETG",
                        "--min-volume-mm", "100,100,50", "--json")
    job_id = json.loads(out)["job_id"]
    assert code == 0 and len(job_id) == 12
    assert run_cli(capsys, "--dir", hub_dir, "submit", str(gcode), "--min-volume-mm", "1,2")[0] == 2
    code, out = run_cli(capsys, "--dir", hub_dir, "status")
    assert out.splitlines()[0].split()[:3] == ["NODE", "ONLINE", "SOC"]
    assert "farm-7" in out
    code, out = run_cli(capsys, "--dir", hub_dir, "status", "--json")
    assert json.loads(out)[0]["node_id"] == "farm-7"
    code, out = run_cli(capsys, "--dir", hub_dir, "cancel", job_id[:6], "--json")
    assert code == 0 and json.loads(out)["result"] == "cancelled before assignment"
    assert run_cli(capsys, "--dir", hub_dir, "cancel", job_id)[0] == 1  # already cancelled


def test_dispatcher_prefers_the_earliest_window_then_online_then_short_queue():
    caps = p.PrinterCapabilities(profile="x", build_volume_mm=(200, 200, 200), nozzle_mm=0.4, materials=["PLA"],
                                 max_hotend_c=260, max_bed_c=100)
    now = 1000.0
    cands = [Candidate("a", caps, 5000.0, True, 0), Candidate("b", caps, 2000.0, False, 3),
             Candidate("c", caps, None, True, 0), Candidate("d", None, 0.0, True, 0),
             Candidate("e", caps.model_copy(update={"nozzle_mm": 0.6}), 0.0, True, 0)]
    chosen, refused = choose_node(p.PrinterRequirements(nozzle_mm=0.4), cands, now)
    assert chosen == "b" and set(refused) == {"d", "e"}
    # windows already open count as now: then online wins, then the shorter queue
    cands = [Candidate("x", caps, 10.0, False, 0), Candidate("y", caps, 500.0, True, 2),
             Candidate("z", caps, 900.0, True, 1)]
    assert choose_node(p.PrinterRequirements(), cands, now)[0] == "z"
    assert choose_node(p.PrinterRequirements(material="ABS"), cands, now)[0] is None


def test_key_rotation_announced_under_the_old_key(mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    async def main() -> None:
        hub = make_hub(tmp_path / "hub", mosquitto)
        old_public = hub.key.public_hex
        try:
            async with running_node(node_config(tmp_path / "n1", mosquitto, "n1", [old_public])) as rn:
                await wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM nodes WHERE node_id = 'n1'"), what="hello")
                code, out = await asyncio.to_thread(run_cli, capsys, "--dir", str(tmp_path / "hub"), "keygen",
                                                    "--rotate")
                new_public = out.strip().splitlines()[-1]
                assert code == 0 and new_public != old_public

                async def trusts_new():
                    return await rn.sync.inbox.trusted_keys() == [new_public]
                await wait_for(trusts_new, what="node trusts the new key only")
                await wait_for(lambda: hub.key.public_hex == new_public, what="hub reloaded its key")
                job_id = hub_cli_submit(hub, tmp_path)

                async def queued():
                    job = await rn.jobs.get(job_id)
                    return job is not None and job.state == JobState.QUEUED
                await wait_for(queued, what="job signed by the new key accepted")
                # the old key is retired: a message it signs is now refused
                old = SigningKey.load(next((tmp_path / "hub").glob("hub.*.key.old")))
                verifier, seqs = await rn.sync.inbox.verifier()
                assert old.key_id not in verifier.key_ids
        finally:
            hub.stop()

    asyncio.run(main())


def hub_cli_submit(hub, tmp_path: Path) -> str:  # noqa: ANN001
    from node.hub.server import submit_job

    return submit_job(hub.ledger, hub.files_dir, gcode_file(tmp_path / "after-rotation.gcode", 5000), node_id="n1")


def test_a_job_no_node_took_before_its_expiry_times_out(tmp_path: Path):
    from node.hub.server import Hub, submit_job
    from node.sync.mqtt import BrokerSettings

    SigningKey.generate().save(tmp_path / "hub" / "hub.key")
    hub = Hub(tmp_path / "hub", BrokerSettings(host="127.0.0.1", port=1), clock=lambda: 2_000.0)
    try:  # never started: pump() works on the ledger alone
        late = submit_job(hub.ledger, hub.files_dir, gcode_file(tmp_path / "a.gcode", 100), node_id="n1",
                          expires_s=1_000.0, now_s=900.0)
        fresh = submit_job(hub.ledger, hub.files_dir, gcode_file(tmp_path / "b.gcode", 100), node_id="n1",
                           expires_s=5_000.0, now_s=900.0)
        hub.pump()
        states = {r["job_id"]: (r["wire_state"], r["hub_state"]) for r in
                  ledger_rows(hub, "SELECT job_id, wire_state, hub_state FROM jobs")}
        assert states[late] == ("TIMED_OUT", "new") and states[fresh] == ("QUEUED", "sent")
        manifest = ledger_rows(hub, "SELECT manifest FROM jobs WHERE job_id = ?", fresh)[0]["manifest"]
        body = p.JobManifest.model_validate_json(p.SignedEnvelope.model_validate_json(manifest).signed)
        assert body.seq == 1 and body.node_id == "n1" and body.hub_time_s == 2_000.0
    finally:
        hub.ledger.close()


def test_hub_serve_runs_as_a_command_and_stops_on_sigterm(mosquitto, tmp_path: Path):
    import signal
    import subprocess
    import sys

    hub_dir = tmp_path / "hub"
    assert subprocess.run([sys.executable, "-m", "node", "hub", "--dir", str(hub_dir), "serve"],
                          capture_output=True, text=True, timeout=30).returncode == 2  # no key yet
    subprocess.run([sys.executable, "-m", "node", "hub", "--dir", str(hub_dir), "keygen"], check=True,
                   capture_output=True, timeout=30)
    proc = subprocess.Popen([sys.executable, "-m", "node", "hub", "--dir", str(hub_dir), "serve",
                             "--broker-host", mosquitto.host, "--broker-port", str(mosquitto.port),
                             "--forecast", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("hub: serving")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_plan_report_reduces_the_planners_summary():
    from sync_harness import plan_event

    from node.sync.client import plan_report

    busy = plan_report("n1", plan_event(1000.0, 5000.0, planned=2, waiting=1))
    assert (busy.next_window_start_s, busy.next_window_end_s) == (5000.0, 6800.0)
    assert busy.queue_length == 3 and busy.waiting_jobs == 1 and busy.energy_available_wh == 400.0
    idle = plan_report("n1", plan_event(1000.0, None, planned=0))
    assert idle.next_window_start_s == 1000.0  # nothing queued, above the reserve: could start now
    low = plan_report("n1", plan_event(1000.0, None, planned=0, soc_pct=20.0))
    assert low.next_window_start_s is None
    stuck = plan_report("n1", plan_event(1000.0, None, planned=0, waiting=2))
    assert stuck.next_window_start_s is None and stuck.queue_length == 2
