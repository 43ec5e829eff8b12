"""The fleet read model and the hub CLI over it, on both ledger backends, with the fleet written through the
hub's real ingest path (tests/hub/fleet_world.py): the current job and the queue ``hub status`` got wrong,
temperatures and battery voltage, every alert with its node and time, a job's history and why it waits,
sentences from submit, cancel and re-provisioning."""
from __future__ import annotations

import argparse
import io
import json
import sqlite3
from pathlib import Path

import pytest

from node.commands import hub as hub_cli
from node.hub import fleet
from node.hub.migrations import statements
from node.hub.server import Hub
from node.sync import protocol as p
from tests.hub.fleet_world import NOW_S, PLA, Clock, build, deliver, make_hub, progress


@pytest.fixture
def world(tmp_path: Path, ledger_location: str | Path):
    clock = Clock(NOW_S)
    hub = make_hub(tmp_path / "hub", ledger_location, clock)
    jobs = build(hub, clock, tmp_path / "files")
    yield hub, clock, jobs, ledger_location
    hub.ledger.close()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="printnode")
    hub_cli.register(parser.add_subparsers())
    args = parser.parse_args(["hub", *argv])
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_nodes_show_the_printing_job_the_real_queue_and_every_alert(world) -> None:
    hub, clock, jobs, _ = world
    nodes = {n.node_id: n for n in fleet.list_nodes(hub.ledger, NOW_S)}
    k1, k2 = nodes["kenya-1"], nodes["kenya-2"]
    # the printer document names the cancelled job: the job that prints is the current one
    assert (k1.current_job, k1.current_job_name, k1.current_job_state, k1.percent) == (jobs["shelf"], "shelf",
                                                                                      "printing", 40.0)
    assert k1.queue_length == 3  # the node's plan counts jobs the hub's own count does not see
    assert (k1.battery_v, k1.hotend_c, k1.hotend_target_c, k1.bed_c) == (12.1, 205.2, 205, 60.1)
    assert k1.site is not None and k1.site.latitude_deg == pytest.approx(-1.286)
    assert k2.current_job is None and not k2.online
    kinds = {(a.node_id, a.kind) for a in fleet.fleet_alerts(list(nodes.values()))}
    assert kinds == {("kenya-1", "low_battery"), ("kenya-1", "stalled"), ("kenya-2", "offline"),
                     ("kenya-2", "thermal_fault")}
    texts = {a.kind: a.text for a in k1.alerts + k2.alerts}
    assert texts["stalled"] == "kenya-1's print shelf has not moved from 40 % since 2026-06-09 09:28Z (45 min)."
    assert texts["offline"] == "kenya-2 has been offline since 2026-06-09 00:13Z (10.0 h)."
    # the low-battery run starts where the telemetry went below 20 %, not at the last report
    assert texts["low_battery"].startswith("kenya-1's battery is low: 15 % (below 20 %) since 2026-06-09 10:0")
    assert "Thermal Runaway" in texts["thermal_fault"] and jobs["bracket"] in texts["thermal_fault"]
    # settings move the thresholds; progress that moves again ends the stall
    calm = fleet.AlertSettings(offline_after_h=12, low_battery_pct=10, stalled_after_min=60)
    assert not [a for n in fleet.list_nodes(hub.ledger, NOW_S, calm) for a in n.alerts if a.kind != "thermal_fault"]
    progress(hub, "kenya-1", jobs["shelf"], 41.0, NOW_S - 5)
    assert "stalled" not in {a.kind for a in fleet.list_nodes(hub.ledger, NOW_S)[0].alerts}


def test_a_restarted_hub_handed_the_retained_documents_again_still_knows_who_is_offline(world) -> None:
    hub, clock, jobs, _ = world
    clock.t_s = NOW_S + 60  # the broker hands a freshly subscribed hub every retained document again
    deliver(hub, "kenya-2", "state", "online", p.OnlineState(online=False))
    deliver(hub, "kenya-2", "state", "power", p.PowerState(t_s=NOW_S - 10 * 3600, soc_pct=64.0))
    k2 = fleet.list_nodes(hub.ledger, NOW_S + 60)[1]
    assert k2.last_seen_s == NOW_S - 10 * 3600  # its last telemetry sample, not the replay
    assert [a.text for a in k2.alerts if a.kind == "offline"] == [
        "kenya-2 has been offline since 2026-06-09 00:13Z (10.0 h)."]


def test_a_finished_job_is_not_current_even_while_the_document_still_names_it(world) -> None:
    hub, clock, jobs, _ = world
    from tests.hub.fleet_world import job_state

    deliver(hub, "kenya-1", "state", "printer", p.PrinterStateDoc(t_s=NOW_S, printer="printing", job_id=jobs["shelf"],
                                                                 job_state="printing", percent=99.0))
    job_state(hub, "kenya-1", jobs["shelf"], 4, "completed", NOW_S + 1)  # the report overtakes the document
    k1 = fleet.list_nodes(hub.ledger, NOW_S)[0]
    assert k1.current_job is None and "stalled" not in {a.kind for a in k1.alerts}


def test_jobs_filter_and_one_job_says_its_history_and_why_it_waits(world) -> None:
    hub, clock, jobs, _ = world
    assert [j.name for j in fleet.list_jobs(hub.ledger, node_id="kenya-1")] == ["shelf", "old"]
    assert [j.name for j in fleet.list_jobs(hub.ledger, state="cancelled")] == ["old"]
    assert [j.name for j in fleet.list_jobs(hub.ledger, state="in_progress")] == ["shelf"]
    assert [j.name for j in fleet.list_jobs(hub.ledger, state="unassigned")] == ["petg-clip"]
    shelf = fleet.job_detail(hub.ledger, jobs["shelf"][:6], NOW_S)
    assert [(e.version, e.node_state) for e in shelf.events] == [(1, "queued"), (2, "waiting_energy"), (3, "printing")]
    assert shelf.events[1].reason.startswith("waiting for the sun") and shelf.waiting is None
    petg = fleet.job_detail(hub.ledger, jobs["petg"], NOW_S)
    assert petg.state == "unassigned" and petg.events == []
    assert petg.waiting == ("no eligible node: kenya-1: material PETG not loaded (PLA); "
                            "kenya-2: material PETG not loaded (PLA)")
    with pytest.raises(KeyError, match="no job 'zzz' on this hub"):
        fleet.job_detail(hub.ledger, "zzz")
    # a node that carries PETG says hello: the dispatcher sends the job there and the old refusal goes
    deliver(hub, "kenya-3", "up", "hello", p.Hello(node_id="kenya-3", t_s=NOW_S,
                                                   capabilities=PLA.model_copy(update={"materials": ["PETG"]})))
    hub.pump()
    petg = fleet.job_detail(hub.ledger, jobs["petg"], NOW_S)
    assert (petg.state, petg.node_id, petg.reason) == ("sent", "kenya-3", "")
    assert petg.waiting == "sent to kenya-3; waiting for the node to take it (the node is online)"


def test_the_cli_prints_tables_sentences_and_json(world, tmp_path: Path, capsys, monkeypatch) -> None:
    hub, clock, jobs, location = world
    base = ["--dir", str(tmp_path / "hub"), "--ledger", str(location)]
    # the CLI's clock is the wall clock: the world's alerts are far in the past, the offline ones still hold
    code, out, _ = run_cli(capsys, *base, "nodes")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["NODE", "ONLINE", "SOC"]
    row = next(line for line in lines if line.startswith("kenya-1"))
    assert "shelf printing 40%" in row and " 12.1 " in row and "205/205" in row and "60/60" in row
    assert row.split()[row.split().index("40%") + 1] == "3"  # QUEUE
    assert "ALERTS" in lines and any("kenya-2 has been offline since 2026-06-09 00:13Z" in line for line in lines)
    assert run_cli(capsys, *base, "status")[1] == out  # the old name still answers
    code, out, _ = run_cli(capsys, *base, "nodes", "--json")
    assert {n["node_id"]: n["queue_length"] for n in json.loads(out)} == {"kenya-1": 3, "kenya-2": 0}
    code, out, _ = run_cli(capsys, *base, "jobs", "--node", "kenya-1", "--state", "printing")
    assert code == 0 and len(out.splitlines()) == 2 and out.splitlines()[1].startswith(jobs["shelf"])
    code, out, _ = run_cli(capsys, *base, "jobs", "--json")
    assert {j["name"]: j["state"] for j in json.loads(out)}["petg-clip"] == "unassigned"
    code, out, _ = run_cli(capsys, *base, "job", jobs["petg"][:8])
    assert "waiting:      no eligible node: kenya-1: material PETG not loaded (PLA)" in out
    code, out, _ = run_cli(capsys, *base, "job", jobs["shelf"], "--json")
    assert [e["version"] for e in json.loads(out)["events"]] == [1, 2, 3]
    code, out, err = run_cli(capsys, *base, "job", "nope")
    assert code == 1 and err.strip() == "printnode hub: no job 'nope' on this hub"
    # submit and cancel speak in sentences
    gcode = tmp_path / "files" / "shelf.gcode"
    code, out, _ = run_cli(capsys, *base, "submit", str(gcode), "--name", "hook")
    job_id = out.split()[1]
    assert code == 0 and out.startswith(f"Job {job_id} (hook) queued for the best node: the hub's dispatcher")
    assert f"`printnode hub job {job_id}` follows it." in out
    code, out, err = run_cli(capsys, *base, "submit", str(gcode), "--node", "mars-1")
    assert code == 2 and "no node 'mars-1' on this hub" in err
    code, out, _ = run_cli(capsys, *base, "cancel", job_id)
    assert code == 0 and out.strip() == f"Job {job_id} is cancelled (cancelled before assignment)."
    code, out, _ = run_cli(capsys, *base, "cancel", jobs["shelf"], "--json")
    assert json.loads(out)["message"].startswith(f"Job {jobs['shelf']}: a signed cancel is on its way to kenya-1")


def test_reprovisioning_asks_before_it_rotates_a_password(tmp_path: Path, capsys, monkeypatch) -> None:
    base = ["--dir", str(tmp_path / "hub")]
    assert run_cli(capsys, *base, "keygen")[0] == 0
    code, first, _ = run_cli(capsys, *base, "provision", "farm-7")
    assert code == 0 and "password" in first
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # not a terminal: refuse, whatever it holds
    code, out, err = run_cli(capsys, *base, "provision", "farm-7")
    assert code == 1 and out == ""
    assert "farm-7 was provisioned at" in err and "run again with --yes to rotate its password" in err

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, out, err = run_cli(capsys, *base, "provision", "farm-7")
    assert code == 1 and out == "" and "Rotate its password? [y/N]" in err and "nothing changed" in err
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    code, out, _ = run_cli(capsys, *base, "provision", "farm-7")
    assert code == 0 and out != first and "password" in out
    code, out, _ = run_cli(capsys, *base, "provision", "farm-7", "--yes")
    assert code == 0 and "password" in out


def test_a_version_3_ledger_gains_the_fleet_columns(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite"
    conn = sqlite3.connect(path)
    for version in (1, 2, 3):
        for statement in statements(version, "sqlite"):
            conn.execute(statement)
    conn.execute("INSERT INTO nodes(node_id, soc_pct, current_job, percent) VALUES('n1', 50, 'j1', 10)")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    hub = make_hub(tmp_path / "hub", path)
    try:
        node = fleet.list_nodes(hub.ledger, NOW_S)[0]
        assert (node.soc_pct, node.battery_v, node.current_job) == (50, None, None)  # no job state: not current
    finally:
        hub.ledger.close()
    assert isinstance(hub, Hub)


def test_hub_serve_with_web_serves_the_page_beside_the_hub_and_stops_on_a_signal(tmp_path: Path) -> None:
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    from node.hub.pgserver import free_port

    hub_dir = tmp_path / "hub"
    assert subprocess.run([sys.executable, "-m", "node", "hub", "--dir", str(hub_dir), "keygen"],
                          capture_output=True, timeout=60).returncode == 0
    # no broker on the port: the hub keeps trying to connect, the page serves the ledger meanwhile
    process = subprocess.Popen([sys.executable, "-m", "node", "hub", "--dir", str(hub_dir), "serve", "--broker-port",
                                str(free_port()), "--web", "--web-port", "0", "--web-bind", "127.0.0.1"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]  # serving, the credentials made, the page
        assert lines[0].startswith("hub: serving") and "page password (shown once)" in lines[1], lines
        url = re.search(r"fleet page: (http://\S+/)", lines[2]).group(1)  # type: ignore[union-attr]
        with urllib.request.urlopen(url + "login", timeout=30) as answer:
            assert answer.status == 200 and b"printnode hub web password" in answer.read()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
