"""What the fleet page and ``hub nodes`` cost a hub: ``python bench/fleet_view.py --nodes 100 [--json out.json]``.

A ledger (SQLite file, and a PostgreSQL from the distribution's binaries with fsync on) is filled through
the hub's own message handler (``Hub._on_message``, as paho calls it): per node a hello with its site,
the retained power, printer and plan documents, a day of 1-minute telemetry (one batch of 1,440 samples),
``--jobs-per-node`` jobs submitted, dispatched by the pump and reported queued, printing and completed
(every 10th failed, one per node printing and stalled).  Then each read the page makes on a refresh is
timed ``--repeat`` times: ``list_nodes`` (every node with its current job, queue and alerts),
``list_jobs`` (the newest 50, and filtered by state), one ``job_detail``, one node's 24-hour
``telemetry_series``, and the whole ``/api/fleet`` answer built as the page's server builds it (JSON
included).  Prints a table; ``--json`` writes the figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.hub import fleet  # noqa: E402
from node.hub.server import submit_job  # noqa: E402
from node.sync import protocol as p  # noqa: E402
from tests.hub.fleet_world import PLA, Clock, deliver, job_state, make_hub, progress  # noqa: E402


def populate(hub: Any, clock: Clock, nodes: int, jobs_per_node: int, files: Path) -> None:
    now = clock.t_s
    gcode = files / "part.gcode"
    gcode.write_text("G28\nG1 X10 Y10 F600\n" * 200)
    for i in range(nodes):
        node_id = f"node-{i:04d}"
        site = p.NodeSite(latitude_deg=-30 + (i % 60), longitude_deg=-150 + (i * 7) % 300, altitude_m=100,
                          timezone="UTC", array_peak_w=400, array_tilt_deg=20, array_azimuth_deg=180)
        deliver(hub, node_id, "up", "hello", p.Hello(node_id=node_id, t_s=now - 86400, capabilities=PLA, site=site))
        rows = [{"t_s": now - 86400 + k * 60, "pv_w": float(k % 400), "soc_pct": 20 + (k % 600) / 10,
                 "battery_v": 12.5} for k in range(1440)]
        deliver(hub, node_id, "up", "telemetry",
                p.encode_telemetry(p.build_telemetry(node_id, now, rows, step_s=60)))
        for j in range(jobs_per_node):
            job_id = submit_job(hub.ledger, hub.files_dir, gcode, name=f"part-{j}", node_id=node_id,
                                now_s=now - 3600 * (j + 1))
            hub.pump()
            job_state(hub, node_id, job_id, 1, "queued", now - 3600 * (j + 1) + 10)
            job_state(hub, node_id, job_id, 2, "printing", now - 3600 * (j + 1) + 20)
            if j == 0:  # the node's current print, stalled for 40 minutes
                progress(hub, node_id, job_id, 30.0, now - 2400)
                continue
            end = "failed" if j % 10 == 9 else "completed"
            job_state(hub, node_id, job_id, 3, end, now - 3600 * j, reason="thermal runaway" if end == "failed" else "")
        deliver(hub, node_id, "state", "power", p.PowerState(t_s=now, soc_pct=15.0 + i % 50, pv_w=100, battery_v=12.4))
        deliver(hub, node_id, "state", "plan", p.PlanState(t_s=now, next_window_start_s=now + 600, queue_length=2))
        deliver(hub, node_id, "state", "printer", p.PrinterStateDoc(t_s=now, printer="printing", hotend_c=205,
                                                                   hotend_target_c=205, bed_c=60, bed_target_c=60))


def timed(fn: Any, repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2)}


def measure(location: str | Path, hub_dir: Path, nodes: int, jobs_per_node: int, repeat: int) -> dict[str, Any]:
    clock = Clock(time.time())
    hub = make_hub(hub_dir, location, clock)
    try:
        started = time.perf_counter()
        populate(hub, clock, nodes, jobs_per_node, hub_dir.parent)
        fill_s = time.perf_counter() - started
        now = clock.t_s
        some_job = fleet.list_jobs(hub.ledger, limit=1)[0].job_id

        def overview() -> bytes:
            views = fleet.list_nodes(hub.ledger, now)
            return json.dumps({"t_s": now, "nodes": [n.model_dump(mode="json") for n in views],
                               "alerts": [a.model_dump(mode="json") for a in fleet.fleet_alerts(views)],
                               "jobs": [j.model_dump(mode="json") for j in fleet.list_jobs(hub.ledger, limit=50)]
                               }).encode()

        result = {"nodes": nodes, "jobs": nodes * jobs_per_node, "telemetry_rows": nodes * 1440,
                  "fill_s": round(fill_s, 1), "overview_bytes": len(overview()),
                  "alerts": len(fleet.fleet_alerts(fleet.list_nodes(hub.ledger, now)))}
        result["list_nodes"] = timed(lambda: fleet.list_nodes(hub.ledger, now), repeat)
        result["list_jobs_50"] = timed(lambda: fleet.list_jobs(hub.ledger, limit=50), repeat)
        result["list_jobs_failed"] = timed(lambda: fleet.list_jobs(hub.ledger, state="failed"), repeat)
        result["job_detail"] = timed(lambda: fleet.job_detail(hub.ledger, some_job, now), repeat)
        result["telemetry_24h"] = timed(lambda: fleet.telemetry_series(hub.ledger, "node-0000", now - 86400), repeat)
        result["api_fleet"] = timed(overview, repeat)
        return result
    finally:
        hub.ledger.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--jobs-per-node", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fleet-view-") as tmp:
        if args.backend in ("sqlite", "both"):
            results["sqlite"] = measure(Path(tmp) / "s" / "ledger.sqlite", Path(tmp) / "s" / "hub", args.nodes,
                                        args.jobs_per_node, args.repeat)
        if args.backend in ("postgresql", "both"):
            from node.hub.pgserver import TempPostgres

            server = TempPostgres(durable=True)
            server.start()
            try:
                results["postgresql"] = measure(server.create_database("fleet_view"), Path(tmp) / "p" / "hub",
                                                args.nodes, args.jobs_per_node, args.repeat)
            finally:
                server.remove()
    reads = ["list_nodes", "list_jobs_50", "list_jobs_failed", "job_detail", "telemetry_24h", "api_fleet"]
    print(f"{'backend':<11} {'nodes':>5} {'jobs':>6} {'alerts':>6} "
          + " ".join(f"{r + ' p50/p95 ms':>26}" for r in reads))
    for backend, r in results.items():
        print(f"{backend:<11} {r['nodes']:>5} {r['jobs']:>6} {r['alerts']:>6} " + " ".join(
            f"{r[k]['median_ms']:>12.1f} / {r[k]['p95_ms']:<11.1f}" for k in reads))
        print(f"{'':<11} /api/fleet answer: {r['overview_bytes'] / 1024:.0f} KiB; filled in {r['fill_s']} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
