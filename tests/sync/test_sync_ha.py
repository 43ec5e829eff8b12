"""Home Assistant: the discovery payloads against HA's MQTT rules, their templates rendered as HA renders
them (Jinja2) on real state documents, and a button press carried through the hub to the node.

The rules checked are HA's documented ones for MQTT discovery (sensor and button platforms, the sensor
device classes' units, state classes; the Energy dashboard takes ``energy`` sensors that are
``total``/``total_increasing`` in an energy unit).  A template that renders ``None`` is what HA shows
as "unknown" (its MQTT sensor treats the payload ``None`` so), never the previous value.
"""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import jinja2
import pytest
from sync_harness import ledger_rows, make_hub, node_config, running_node, wait_for

from node.events import JobPauseRequested, TelemetrySample
from node.jobs import JobState
from node.sync import protocol as p
from node.sync.discovery import BUTTON_VERBS, SENSORS, discovery_messages

#: HA's MQTT discovery keys we may use (full names; HA also takes abbreviations, which we do not send)
SENSOR_KEYS = {"name", "unique_id", "object_id", "state_topic", "value_template", "availability_topic",
               "availability_template", "device", "unit_of_measurement", "device_class", "state_class", "icon"}
BUTTON_KEYS = {"name", "unique_id", "object_id", "command_topic", "payload_press", "qos", "retain", "icon",
               "availability_topic", "availability_template", "device"}
DEVICE_KEYS = {"identifiers", "name", "manufacturer"}
#: HA's sensor device classes we use, with the units HA accepts for each (None: no unit)
UNITS = {"battery": {"%"}, "power": {"W", "kW", "mW", "MW"}, "voltage": {"V", "mV", "kV"},
         "energy": {"Wh", "kWh", "MWh", "mWh"}, "timestamp": {None}}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
ID_LEVEL = re.compile(r"^[a-zA-Z0-9_-]+$")


def render(template: str, payload: bytes) -> str:
    """What HA's MQTT sensor gets from ``value_template`` for ``payload`` (value_json, as_datetime, none)."""
    env = jinja2.Environment(undefined=jinja2.Undefined, autoescape=False)
    env.globals["as_datetime"] = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(float(t)))
    return env.from_string(template).render(value_json=json.loads(payload), value=payload.decode())


def test_discovery_follows_has_rules_and_the_energy_dashboard_can_take_the_counters() -> None:
    messages = discovery_messages("n1")
    assert len(messages) == len(SENSORS) + len(BUTTON_VERBS)
    unique_ids = set()
    energy = []
    for topic, payload in messages:
        prefix, component, node_level, object_level, tail = topic.split("/")
        assert (prefix, node_level, tail) == ("homeassistant", "n1", "config") and ID_LEVEL.match(object_level)
        config = json.loads(payload)
        unique_ids.add(config["unique_id"])
        assert DEVICE_KEYS >= set(config["device"]) and config["device"]["identifiers"] == ["printnode_n1"]
        assert config["availability_topic"] == p.state_topic("n1", "online")
        if component == "button":
            assert BUTTON_KEYS >= set(config), set(config) - BUTTON_KEYS
            assert config["command_topic"] == p.ha_command_topic("n1") and config["payload_press"] in BUTTON_VERBS
            continue
        assert component == "sensor" and SENSOR_KEYS >= set(config), set(config) - SENSOR_KEYS
        assert config["state_topic"].startswith(p.node_root("n1") + "/state/")
        device_class, unit, state_class = (config.get("device_class"), config.get("unit_of_measurement"),
                                           config.get("state_class"))
        if device_class is not None:
            assert unit in UNITS[device_class], (config["name"], unit)
        if state_class is not None:
            assert state_class in STATE_CLASSES and device_class != "timestamp"
            assert unit is not None or config["name"] == "Jobs queued"  # numeric sensors only
        if device_class == "energy":
            assert state_class in ("total", "total_increasing")
            energy.append(config)
        if unit in ("W", "V", "%") and device_class != "energy":
            assert state_class == "measurement", config["name"]  # long-term statistics
    assert len(unique_ids) == len(messages)
    assert {c["value_template"] for c in energy} == {"{{ value_json.pv_energy_wh | default(none) }}",
                                                     "{{ value_json.printer_energy_wh | default(none) }}"}
    names = {json.loads(payload)["name"] for _, payload in messages}
    assert {"Why the next job waits", "Pause job", "Resume job", "Cancel job"} <= names


def test_every_template_stays_defined_when_a_field_is_null_or_absent() -> None:
    """A null field (unknown) and a missing one (a node before protocol 1.1) both render as HA's unknown."""
    full = {"power": p.PowerState(t_s=1.8e9, soc_pct=64.0, pv_w=321.5, battery_v=13.1, load_w=4.0,
                                  pv_energy_wh=1234.5, printer_energy_wh=88.0),
            "printer": p.PrinterStateDoc(t_s=1.8e9, printer="printing", job_id="j1", job_state="printing",
                                         job_version=4, percent=42.5),
            "plan": p.PlanState(t_s=1.8e9, next_window_start_s=1.8e9 + 3600, queue_length=2, waiting_jobs=1,
                                waiting_reason="big part: no window in 48 h", forecast_source="hub")}
    for spec in SENSORS:
        config = json.loads(dict(discovery_messages("n1"))[f"homeassistant/sensor/n1/{spec.suffix}/config"])
        doc = full[spec.doc]
        value = render(config["value_template"], doc.model_dump_json().encode())
        if spec.device_class == "timestamp":
            assert value == "2027-01-15T09:00:00+00:00"
        else:
            assert value == str(getattr(doc, spec.field)), spec.field
        null_doc = doc.model_copy(update={spec.field: None}).model_dump_json().encode()
        absent = json.dumps({k: v for k, v in json.loads(null_doc).items() if k != spec.field}).encode()
        assert render(config["value_template"], null_doc) == "None", spec.field
        assert render(config["value_template"], absent) == "None", spec.field
    availability = json.loads(discovery_messages("n1")[0][1])["availability_template"]
    assert render(availability, b'{"online": true}') == "online"
    assert render(availability, b'{"online": false}') == "offline"


def _mosquitto_pub(broker, topic: str, message: str) -> None:  # noqa: ANN001
    if not shutil.which("mosquitto_pub"):
        pytest.skip("mosquitto_pub not installed (apt-get install mosquitto-clients; make test does)")
    subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic,
                    "-m", message], check=True, capture_output=True, timeout=10)


def test_a_home_assistant_button_reaches_the_node_as_a_command_the_hub_signed(mosquitto, tmp_path: Path) -> None:
    """Press pause (mosquitto_pub, as HA's button publishes), the node is asked to pause the job at the version
    its state showed; a press on a job that moved on is refused by the node; cancel cancels; nonsense is
    logged; the energy counters reach state/power."""

    async def main() -> None:
        hub = make_hub(tmp_path / "hub", mosquitto)
        try:
            config = node_config(tmp_path / "n1", mosquitto, "n1", [hub.key.public_hex], state_interval_s=0,
                                 ha_discovery=True)
            async with running_node(config) as rn:
                pauses: list[JobPauseRequested] = []
                rn.node.register_event_handler("job_pause_requested", pauses.append)
                await wait_for(lambda: rn.sync.connected.is_set(), what="node connected")
                job = await rn.jobs.create("benchy", "cli", state=JobState.QUEUED)
                job = await rn.jobs.transition(job.id, JobState.PRINTING, "started")
                await wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM nodes WHERE current_job = ? AND job_version = ?",
                                                   job.id, job.version), what="the hub knows the job's version")
                # a job queued meanwhile does not become "the current job" the buttons act on
                queued = await rn.jobs.create("next part", "cli", state=JobState.QUEUED)
                await wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM job_events WHERE job_id = ?", queued.id),
                               what="the hub heard of the queued job")
                assert ledger_rows(hub, "SELECT current_job FROM nodes")[0]["current_job"] == job.id
                _mosquitto_pub(mosquitto, p.ha_command_topic("n1"), "pause")
                await wait_for(lambda: pauses, what="the node asked to pause")
                assert pauses[0].job_id == job.id and pauses[0].expected_version == job.version
                assert pauses[0].source == "hub"
                (command,) = ledger_rows(hub, "SELECT kind, signed FROM commands")
                assert command["kind"] == "pause" and json.loads(command["signed"])["sig"]
                # garbage on the button topic is a logged refusal, nothing queued
                _mosquitto_pub(mosquitto, p.ha_command_topic("n1"), "explode")
                await wait_for(lambda: hub.counters["bad_input"] >= 1, what="the hub refused the word")
                # cancel: the job ends, and the hub hears it
                _mosquitto_pub(mosquitto, p.ha_command_topic("n1"), "cancel")

                async def cancelled() -> bool:
                    return (await rn.jobs.get(job.id)).state == JobState.CANCELLED
                await wait_for(cancelled, what="cancelled by the button")
                await wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM job_events WHERE job_id = ? AND"
                                                        " node_state = 'cancelled'", job.id), what="hub sees it")
                assert len(ledger_rows(hub, "SELECT 1 FROM commands")) == 2
                # the energy counters: two samples an hour apart at 100 W PV and 50 W printer
                t0 = time.time() - 3600
                for t in (t0, t0 + 3600):
                    await rn.node.send_event("telemetry_sample", TelemetrySample(
                        t_s=t, source="sim", pv_w=100.0, printer_w=50.0, soc_pct=60.0))
                power = rn.sync._state_docs["power"]
                assert (power.pv_energy_wh, power.printer_energy_wh) == (100.0, 50.0)
            # kept across a restart: a counter HA reads as total_increasing never goes back
            async with running_node(config) as rn:
                await rn.node.send_event("telemetry_sample", TelemetrySample(t_s=time.time(), source="sim",
                                                                             pv_w=0.0, soc_pct=60.0))
                assert rn.sync._meters["pv_energy_wh"] == 100.0
        finally:
            hub.stop()

    asyncio.run(main())
