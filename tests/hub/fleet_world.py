"""A small fleet written into a real hub's ledger through its real ingest path (``Hub._on_message``, the
handler paho calls for every message): hellos, retained state documents, reports, telemetry batches,
the pump's dispatch.  The broker is left out: the point is what the CLI and the fleet page make of it.

Three nodes (the issue's findings in them):
- ``kenya-1`` (Nairobi, PLA): printing ``shelf`` whose progress stands at 40 % for 45 min (stalled); its
  printer document still names a job it cancelled before (never shown as current); its plan counts
  3 waiting jobs; battery 15 % (low) after a day of telemetry.
- ``kenya-2`` (Kisumu, PLA): last heard 10 hours ago (offline; its last telemetry sample then);
  a print failed on a thermal runaway.
- a PETG job nobody can print (``no eligible node: ... material PETG not loaded``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import BaseModel

from node.hub.server import Hub, submit_job
from node.sync import protocol as p
from node.sync.mqtt import BrokerSettings
from node.sync.signing import SigningKey

NOW_S = 1_781_000_000.0  # 2026-06-09 ~10:13 UTC: the world's "now"
PLA = p.PrinterCapabilities(profile="ender3", build_volume_mm=(220, 220, 250), nozzle_mm=0.4, materials=["PLA"],
                            max_hotend_c=260, max_bed_c=100)
NAIROBI = p.NodeSite(latitude_deg=-1.286, longitude_deg=36.817, altitude_m=1795, timezone="Africa/Nairobi",
                     array_peak_w=400, array_tilt_deg=10, array_azimuth_deg=0)
KISUMU = p.NodeSite(latitude_deg=-0.092, longitude_deg=34.768, altitude_m=1131, timezone="Africa/Nairobi",
                    array_peak_w=300, array_tilt_deg=10, array_azimuth_deg=0)


class Clock:
    """The hub's clock, moved by the scenario."""

    def __init__(self, t_s: float) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s


def make_hub(hub_dir: Path, ledger: str | Path | None = None, clock: Clock | None = None) -> Hub:
    """A hub that is never connected: its handler and pump run as paho's thread and the pump thread would."""
    hub_dir.mkdir(parents=True, exist_ok=True)
    if not (hub_dir / "hub.key").exists():
        SigningKey.generate().save(hub_dir / "hub.key")
    return Hub(hub_dir, BrokerSettings(host="127.0.0.1", client_id="fleet-test"), ledger=ledger,
               clock=clock or Clock(NOW_S))


def deliver(hub: Hub, node_id: str, direction: str, kind: str, payload: BaseModel | bytes) -> None:
    """One MQTT message into the hub's on_message, as paho hands it over."""
    message = mqtt.MQTTMessage(topic=f"{p.TOPIC_ROOT}/{node_id}/{direction}/{kind}".encode())
    message.payload = payload if isinstance(payload, bytes) else payload.model_dump_json().encode()
    before = hub.counters["bad_input"]
    hub._on_message(None, None, message)
    assert hub.counters["bad_input"] == before, f"the hub refused {kind} from {node_id}"


def job_state(hub: Hub, node_id: str, job_id: str, version: int, state: str, t_s: float, reason: str = "") -> None:
    deliver(hub, node_id, "up", "job_state", p.JobStateReport(
        node_id=node_id, t_s=t_s, job_id=job_id, version=version, node_state=state, wire_state=p.wire_state(state),
        reason=reason))


def progress(hub: Hub, node_id: str, job_id: str, percent: float, t_s: float) -> None:
    deliver(hub, node_id, "up", "job_progress", p.JobProgressReport(
        node_id=node_id, t_s=t_s, job_id=job_id, percent=percent, bytes_done=int(percent * 100), bytes_total=10000,
        elapsed_s=600))


def telemetry_day(hub: Hub, node_id: str, end_s: float, soc_end_pct: float) -> None:
    """24 h of 5-minute telemetry: PV follows a day's arc, SoC falls to ``soc_end_pct`` over the last hours."""
    rows: list[dict[str, Any]] = []
    for i in range(288):
        t_s = end_s - 86400 + i * 300
        hour = (i * 5 / 60 + 3) % 24  # local solar hour, roughly (Kenya: UTC+3)
        pv_w = max(0.0, 300 * (1 - ((hour - 12.5) / 6) ** 2))
        soc = min(95.0, 30 + 60 * max(0.0, (hour - 7) / 8)) if hour < 15 else max(soc_end_pct, 90 - (hour - 15) * 9)
        rows.append({"t_s": t_s, "pv_w": round(pv_w, 1), "soc_pct": round(soc, 1), "battery_v": 12.0 + soc / 100})
    rows[-1]["soc_pct"] = soc_end_pct
    rows[-2]["soc_pct"] = soc_end_pct + 1  # below 20 % for the last ten minutes
    batch = p.build_telemetry(node_id, end_s, rows, step_s=60)
    deliver(hub, node_id, "up", "telemetry", p.encode_telemetry(batch))


def build(hub: Hub, clock: Clock, files: Path) -> dict[str, str]:
    """The fleet described above; returns the job ids by name."""
    now = clock.t_s
    files.mkdir(parents=True, exist_ok=True)
    gcode = files / "shelf.gcode"
    gcode.write_text("G28\nG1 X10 Y10 F600\n" * 50)
    jobs: dict[str, str] = {}
    for node_id, site in (("kenya-1", NAIROBI), ("kenya-2", KISUMU)):
        deliver(hub, node_id, "up", "hello", p.Hello(node_id=node_id, t_s=now - 86400, capabilities=PLA, site=site))
    # kenya-2 went quiet ten hours ago, after a thermal runaway ended its print
    clock.t_s = now - 10 * 3600
    jobs["bracket"] = submit_job(hub.ledger, hub.files_dir, gcode, name="bracket", node_id="kenya-2",
                                 now_s=clock.t_s - 3600)
    hub.pump()
    job_state(hub, "kenya-2", jobs["bracket"], 1, "queued", clock.t_s - 3000)
    job_state(hub, "kenya-2", jobs["bracket"], 2, "printing", clock.t_s - 2400)
    job_state(hub, "kenya-2", jobs["bracket"], 3, "failed", clock.t_s - 60,
              reason="printer error: Error:Thermal Runaway, system stopped! Heater_ID: 0")
    rows = [{"t_s": clock.t_s - 3600 + 60 * k, "pv_w": 120.0, "soc_pct": 64.0} for k in range(61)]
    deliver(hub, "kenya-2", "up", "telemetry", p.encode_telemetry(p.build_telemetry("kenya-2", clock.t_s, rows, 60)))
    deliver(hub, "kenya-2", "state", "power", p.PowerState(t_s=clock.t_s, soc_pct=64.0, pv_w=120.0, battery_v=12.9))
    deliver(hub, "kenya-2", "state", "online", p.OnlineState(online=False, t_s=clock.t_s))
    # kenya-1: cancelled an old job, now prints "shelf", stalled at 40 % for 45 minutes; three jobs wait
    clock.t_s = now - 3600
    jobs["old"] = submit_job(hub.ledger, hub.files_dir, gcode, name="old", node_id="kenya-1", now_s=clock.t_s - 600)
    jobs["shelf"] = submit_job(hub.ledger, hub.files_dir, gcode, name="shelf", node_id="kenya-1", now_s=clock.t_s)
    hub.pump()
    job_state(hub, "kenya-1", jobs["old"], 1, "queued", clock.t_s - 500)
    job_state(hub, "kenya-1", jobs["old"], 2, "cancelled", clock.t_s - 400, reason="cancelled by the user")
    job_state(hub, "kenya-1", jobs["shelf"], 1, "queued", clock.t_s + 10)
    job_state(hub, "kenya-1", jobs["shelf"], 2, "waiting_energy", clock.t_s + 20,
              reason="waiting for the sun: the battery would fall below the reserve")
    job_state(hub, "kenya-1", jobs["shelf"], 3, "printing", clock.t_s + 600)
    progress(hub, "kenya-1", jobs["shelf"], 12.0, clock.t_s + 700)
    progress(hub, "kenya-1", jobs["shelf"], 40.0, now - 45 * 60)
    clock.t_s = now
    progress(hub, "kenya-1", jobs["shelf"], 40.0, now - 60)  # the same percent again: not a move
    # the retained printer document as a node before the fix sent it: it names the cancelled job
    deliver(hub, "kenya-1", "state", "printer", p.PrinterStateDoc(t_s=now - 30, printer="printing",
                                                                 job_id=jobs["old"], job_state="cancelled",
                                                                 percent=None, hotend_c=205.2, hotend_target_c=205,
                                                                 bed_c=60.1, bed_target_c=60))
    deliver(hub, "kenya-1", "state", "plan", p.PlanState(t_s=now - 30, next_window_start_s=now + 7200,
                                                         next_window_end_s=now + 14400, queue_length=3))
    deliver(hub, "kenya-1", "state", "power", p.PowerState(t_s=now - 30, soc_pct=15.0, pv_w=35.0, battery_v=12.1))
    deliver(hub, "kenya-1", "state", "online", p.OnlineState(online=True, t_s=now - 30))
    telemetry_day(hub, "kenya-1", now - 60, soc_end_pct=15.0)
    # a PETG part nobody carries
    jobs["petg"] = submit_job(hub.ledger, hub.files_dir, gcode, name="petg-clip",
                              requirements=p.PrinterRequirements(material="PETG"), now_s=now)
    hub.pump()
    return jobs
