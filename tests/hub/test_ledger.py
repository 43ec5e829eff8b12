"""The hub's ledger on both backends (SQLite file, real PostgreSQL): the same tests, the same outcomes.

Several workers are several ``Hub`` objects on one ledger, driven from threads at the same time,
the way two ``hub serve`` processes meet in PostgreSQL: every report is committed once, every
job is signed once, sequence numbers never repeat, and the pump lease passes on when its holder
stops renewing it.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from node.hub.backends import open_ledger
from node.hub.migrations import SCHEMA_VERSION, statements
from node.hub.server import Hub, announce_key, cancel_job, fleet_status, queue_command, submit_job
from node.sync import protocol as p
from node.sync.mqtt import BrokerSettings
from node.sync.signing import SigningKey, Verifier

CAPS = p.PrinterCapabilities(profile="ender3", build_volume_mm=(220, 220, 250), nozzle_mm=0.4,
                             materials=["PLA"], max_hotend_c=260, max_bed_c=100)


def make_hubs(hub_dir: Path, location: str | Path, count: int) -> list[Hub]:
    """``count`` workers on one ledger and one hub directory, never connected (no broker needed)."""
    if not (hub_dir / "hub.key").exists():
        SigningKey.generate().save(hub_dir / "hub.key")
    return [Hub(hub_dir, BrokerSettings(host="127.0.0.1", client_id=f"w{i}"), ledger=location) for i in range(count)]


def rows(hub: Hub, sql: str, *args: object) -> list[dict[str, Any]]:
    return hub.ledger.read(lambda c: [dict(r) for r in c.execute(sql, args).fetchall()])


def reports_of(node_id: str, count: int) -> list[tuple[str, bytes]]:
    """(kind, payload) of ``count`` jobs' worth of reports: states, progress, a record, telemetry, a plan."""
    out: list[tuple[str, bytes]] = []
    for i in range(count):
        job = f"{node_id}-j{i}"
        for version, state in enumerate(["queued", "printing", "completed"], start=1):
            out.append(("job_state", p.JobStateReport(node_id=node_id, t_s=1000 + i, job_id=job, version=version,
                                                      node_state=state, wire_state=p.wire_state(state))
                        .model_dump_json().encode()))
        out.append(("job_progress", p.JobProgressReport(node_id=node_id, t_s=1000 + i, job_id=job, percent=50,
                                                        bytes_done=5, bytes_total=10, elapsed_s=1)
                    .model_dump_json().encode()))
        out.append(("job_record", p.JobRecord(node_id=node_id, t_s=1001 + i, job_id=job,
                                              outcome=p.WireState.SUCCEEDED, node_state="completed",
                                              created_s=1000 + i).model_dump_json().encode()))
        batch = p.build_telemetry(node_id, 1000 + i, [{"t_s": 60.0 * (10 * i + k), "pv_w": 100.0 + k,
                                                       "soc_pct": 50.0} for k in range(10)], step_s=60)
        out.append(("telemetry", p.encode_telemetry(batch)))
        out.append(("plan", p.PlanSummaryReport(node_id=node_id, t_s=1000 + i, next_window_start_s=2000,
                                                queue_length=i).model_dump_json().encode()))
    return out


def test_migrations_bring_a_new_ledger_to_the_current_schema_once(ledger_location: str | Path):
    first = open_ledger(ledger_location)
    try:
        assert first.schema_version() == SCHEMA_VERSION
        with first.tx() as conn:
            conn.execute("INSERT INTO leases(name, holder, expires_s) VALUES('x', 'y', 1.5)")
        second = open_ledger(ledger_location)  # a second worker starting: nothing left to do, nothing lost
        assert second.schema_version() == SCHEMA_VERSION
        assert second.read(lambda c: c.execute("SELECT expires_s FROM leases").fetchone()[0]) == 1.5
        second.close()
    finally:
        first.close()


def test_epoch_seconds_keep_their_fraction(ledger_location: str | Path):
    """PostgreSQL's REAL is 4 bytes (epoch seconds to the minute): the schema says DOUBLE PRECISION there."""
    ledger = open_ledger(ledger_location)
    try:
        with ledger.tx() as conn:
            conn.execute("INSERT INTO received(node_id, msg_id, kind, t_s) VALUES(?,?,?,?)",
                         ("n1", "m", "plan", 1_764_633_600.125))
        assert ledger.read(lambda c: c.execute("SELECT t_s FROM received").fetchone()[0]) == 1_764_633_600.125
    finally:
        ledger.close()


def test_a_version_1_sqlite_ledger_is_migrated_and_keeps_its_rows(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    for statement in statements(1, "sqlite"):
        conn.execute(statement)
    conn.execute("INSERT INTO nodes(node_id, seq) VALUES('n1', 7)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    ledger = open_ledger(path)
    try:
        assert ledger.schema_version() == SCHEMA_VERSION
        with ledger.tx() as c:
            assert ledger.next_seq(c, "n1") == 8
        assert ledger.try_lease("pump", "w0", 100.0, 5.0)
    finally:
        ledger.close()


def test_a_ledger_newer_than_the_hub_is_refused(tmp_path: Path):
    path = tmp_path / "new.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this hub"):
        open_ledger(path)


def test_reports_racing_through_two_workers_are_each_committed_once(ledger_location: str | Path, tmp_path: Path):
    hubs = make_hubs(tmp_path / "hub", ledger_location, 2)
    try:
        reports = {node: reports_of(node, 8) for node in ("n1", "n2", "n3")}
        # both workers get every report, as after a worker died between commit and ack and the node resent
        threads = [threading.Thread(target=lambda h=hub, n=node: [h._on_up(n, kind, payload)
                                                                 for kind, payload in reports[n]])
                   for hub in hubs for node in reports]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = sum(len(r) for r in reports.values())
        assert sum(h.counters["reports"] for h in hubs) == total
        assert sum(h.counters["duplicates"] for h in hubs) == total
        assert rows(hubs[0], "SELECT COUNT(*) AS n FROM received")[0]["n"] == total
        assert rows(hubs[0], "SELECT COUNT(*) AS n FROM job_events")[0]["n"] == 3 * 8 * 3
        assert rows(hubs[0], "SELECT COUNT(*) AS n FROM telemetry")[0]["n"] == 10 * 8 * 3
        assert rows(hubs[0], "SELECT COUNT(*) AS n FROM job_records")[0]["n"] == 8 * 3
        assert rows(hubs[0], "SELECT COUNT(*) AS n FROM progress")[0]["n"] == 8 * 3
        assert {r["queue_length"] for r in rows(hubs[0], "SELECT queue_length FROM nodes")} == {7}
    finally:
        for hub in hubs:
            hub.ledger.close()


def test_job_state_keeps_the_highest_version_and_a_record_is_replaced(ledger_location: str | Path, tmp_path: Path):
    (hub,) = make_hubs(tmp_path / "hub", ledger_location, 1)
    try:
        job_id = submit_job(hub.ledger, hub.files_dir, _gcode(tmp_path), node_id="n1")
        hub.pump()
        for version, state in [(2, "printing"), (1, "queued")]:  # out of order: version 1 arrives late
            hub._on_up("n1", "job_state", p.JobStateReport(
                node_id="n1", t_s=1000, job_id=job_id, version=version, node_state=state,
                wire_state=p.wire_state(state)).model_dump_json().encode())
        job = rows(hub, "SELECT version, node_state, wire_state FROM jobs WHERE job_id = ?", job_id)[0]
        assert job == {"version": 2, "node_state": "printing", "wire_state": "IN_PROGRESS"}
        for percent, t_s in [(40.0, 1010.0), (20.0, 1005.0)]:  # the older progress does not win
            hub._on_up("n1", "job_progress", p.JobProgressReport(
                node_id="n1", t_s=t_s, job_id=job_id, percent=percent, bytes_done=1, bytes_total=2,
                elapsed_s=1).model_dump_json().encode())
        assert rows(hub, "SELECT percent FROM progress")[0]["percent"] == 40.0
        for outcome, state in [(p.WireState.FAILED, "failed"), (p.WireState.SUCCEEDED, "completed")]:
            hub._on_up("n1", "job_record", p.JobRecord(node_id="n1", t_s=1020, job_id=job_id, outcome=outcome,
                                                       node_state=state, created_s=1000).model_dump_json().encode())
        assert [r["outcome"] for r in rows(hub, "SELECT outcome FROM job_records")] == ["SUCCEEDED"]
        with pytest.raises(ValueError, match="names node"):
            hub._on_up("n2", "plan", p.PlanSummaryReport(node_id="n1", t_s=1).model_dump_json().encode())
    finally:
        hub.ledger.close()


def _gcode(tmp_path: Path, name: str = "part.gcode") -> Path:
    path = tmp_path / name
    path.write_text("G28\nG1 X10 Y10 F600\n" * 50)
    return path


def _hello(hub: Hub, node_id: str) -> None:
    hub._on_hello(node_id, p.Hello(node_id=node_id, t_s=1000, capabilities=CAPS))


@pytest.mark.parametrize("lapsed_lease", [False, True], ids=["lease", "lapsed-lease"])
def test_two_pumping_workers_sign_each_job_once_with_distinct_seqs(ledger_location: str | Path, tmp_path: Path,
                                                                  lapsed_lease: bool):
    """With the lease one worker pumps; with a lease that lapsed under a stalled holder (both think they
    hold it) the per-job claim still lets only one transaction sign a job."""
    hubs = make_hubs(tmp_path / "hub", ledger_location, 2)
    try:
        for node in ("n1", "n2", "n3"):
            _hello(hubs[0], node)
        source = _gcode(tmp_path)
        named = [submit_job(hubs[0].ledger, hubs[0].files_dir, source, node_id="n1") for _ in range(15)]
        fleet = [submit_job(hubs[0].ledger, hubs[0].files_dir, source) for _ in range(15)]
        if lapsed_lease:
            for hub in hubs:
                hub.ledger.try_lease = lambda *args: True  # type: ignore[method-assign]
        barrier = threading.Barrier(len(hubs))

        def pump(hub: Hub) -> None:
            barrier.wait()
            for _ in range(5):
                hub.pump()

        threads = [threading.Thread(target=pump, args=(hub,)) for hub in hubs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(h.counters["manifests"] for h in hubs) == 30
        if not lapsed_lease:
            assert sorted(h.counters["manifests"] for h in hubs) == [0, 30]
        jobs = rows(hubs[0], "SELECT job_id, node_id, manifest, hub_state FROM jobs")
        assert {j["hub_state"] for j in jobs} == {"sent"} and len(jobs) == 30
        assert {j["node_id"] for j in jobs if j["job_id"] in named} == {"n1"}
        assert {j["node_id"] for j in jobs if j["job_id"] in fleet} <= {"n1", "n2", "n3"}
        key = SigningKey.load(tmp_path / "hub" / "hub.key")
        seqs: dict[str, list[int]] = {}
        for job in jobs:
            manifest = Verifier(job["node_id"], [key.public_hex]).open(job["manifest"].encode(), p.JobManifest,
                                                                      1000.0, [])
            seqs.setdefault(job["node_id"], []).append(manifest.seq)
        for node, numbers in seqs.items():
            assert sorted(numbers) == list(range(1, len(numbers) + 1)), node  # no repeats, no gaps
    finally:
        for hub in hubs:
            hub.ledger.close()


def test_the_pump_lease_passes_on_only_after_it_expires(ledger_location: str | Path):
    ledger = open_ledger(ledger_location)
    try:
        assert ledger.try_lease("pump", "a", 100.0, 5.0)
        assert ledger.try_lease("pump", "a", 102.0, 5.0)  # renewed until 107
        assert not ledger.try_lease("pump", "b", 106.0, 5.0)
        assert ledger.try_lease("pump", "b", 107.5, 5.0)
        assert not ledger.try_lease("pump", "a", 108.0, 5.0)
        ledger.release_lease("pump", "b")
        assert ledger.try_lease("pump", "a", 108.0, 5.0)
    finally:
        ledger.close()


def test_cli_operations_submit_cancel_commands_keys_and_status(ledger_location: str | Path, tmp_path: Path):
    (hub,) = make_hubs(tmp_path / "hub", ledger_location, 1)
    try:
        _hello(hub, "n1")
        source = _gcode(tmp_path)
        waiting = submit_job(hub.ledger, hub.files_dir, source, node_id="n1")
        assert cancel_job(hub.ledger, waiting[:6]) == (waiting, "cancelled before assignment")
        with pytest.raises(ValueError, match="already CANCELED"):
            cancel_job(hub.ledger, waiting)
        with pytest.raises(KeyError, match="no job"):
            cancel_job(hub.ledger, "zzzz%")
        sent = submit_job(hub.ledger, hub.files_dir, source, node_id="n1")
        hub.pump()
        assert cancel_job(hub.ledger, sent) == (sent, "cancel sent to n1")
        queue_command(hub.ledger, "n1", {"kind": "plate_cleared"})
        new_key = SigningKey.generate()
        assert announce_key(hub.ledger, hub.key, new_key) == 1
        hub.pump()
        commands = rows(hub, "SELECT kind, sent, signed FROM commands ORDER BY created_s")
        assert [c["kind"] for c in commands] == ["cancel", "plate_cleared", "key"]
        assert all(c["sent"] == 1 and c["signed"] for c in commands)
        status = fleet_status(hub.ledger)
        assert [(s["node_id"], s["online"], s["queue"]) for s in status] == [("n1", True, 1)]
    finally:
        hub.ledger.close()


def test_job_versions_filed_by_two_workers_at_once_leave_the_highest(ledger_location: str | Path, tmp_path: Path):
    """Worker 0 files version 3 and has not committed when worker 1 files version 2 of the same job.

    PostgreSQL lets worker 1 read the committed version 1 meanwhile; a read-then-write would then
    overwrite 3 with 2 once worker 0 commits.  The update is one conditional statement instead,
    which PostgreSQL re-checks on the row worker 0 committed.  (SQLite: worker 1 waits for the file.)
    """
    hubs = make_hubs(tmp_path / "hub", ledger_location, 2)
    try:
        job_id = submit_job(hubs[0].ledger, hubs[0].files_dir, _gcode(tmp_path), node_id="n1")
        hubs[0].pump()

        def report(version: int, state: str) -> p.JobStateReport:
            return p.JobStateReport(node_id="n1", t_s=1000 + version, job_id=job_id, version=version,
                                    node_state=state, wire_state=p.wire_state(state))

        hubs[0]._on_up("n1", "job_state", report(1, "received").model_dump_json().encode())
        late = threading.Thread(target=hubs[1]._on_up,
                                args=("n1", "job_state", report(2, "downloading").model_dump_json().encode()))
        with hubs[0].ledger.tx() as conn:
            hubs[0]._apply_job_state(conn, "n1", report(3, "queued"))
            late.start()
            late.join(1.0)  # worker 1 is now waiting for worker 0's lock (or, on a slow day, about to)
        late.join()
        assert rows(hubs[0], "SELECT version, node_state FROM jobs") == [{"version": 3, "node_state": "queued"}]
        assert rows(hubs[0], "SELECT COUNT(*) AS n FROM job_events")[0]["n"] == 3  # v2 kept as history
    finally:
        for hub in hubs:
            hub.ledger.close()
