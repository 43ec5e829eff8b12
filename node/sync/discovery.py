"""Optional Home Assistant MQTT discovery: retained config topics so HA shows the node with no setup.

Each sensor points at one of the node's plain-JSON retained state topics and picks a field with a
``value_template``; availability follows ``state/online`` (the last will).  Reference: Home
Assistant, "MQTT Discovery" (``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config``).
We use the optional node-id level with our node id, so the broker ACL can give each node
``homeassistant/+/%u/+/config`` (Mosquitto substitutes ``%u`` only as a whole level).

What HA gets from it:

* numeric sensors carry ``state_class: measurement`` (HA keeps long-term statistics of them);
* ``pv_energy`` and ``printer_energy`` are the cumulative counters of ``state/power``
  (``device_class: energy``, ``state_class: total_increasing``, Wh): the Energy dashboard takes them;
* every template reads its field with ``| default(none)``: a document without the field (a node
  older than protocol 1.1) and a null field (unknown) both give HA's "unknown", never the last value;
* buttons pause, resume and cancel the current job.  A node trusts only commands signed by its hub,
  so a button does not talk to the node: it publishes its verb on ``printnode/v1/<node>/ha/command``,
  the hub turns it into a signed ``Command`` for the node's current job (docs/protocol.md, "Home
  Assistant buttons").
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from node.sync.protocol import ha_command_topic, state_topic

DISCOVERY_PREFIX = "homeassistant"
#: the words a button publishes on the hub's ``ha/command`` topic (and the only ones the hub takes)
BUTTON_VERBS = ("pause", "resume", "cancel")


@dataclass(frozen=True)
class SensorSpec:
    suffix: str
    name: str
    doc: str  # which state document (state/<doc>)
    field: str
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    icon: str | None = None


SENSORS = [
    SensorSpec("soc", "State of charge", "power", "soc_pct", "%", "battery", "measurement"),
    SensorSpec("pv", "PV power", "power", "pv_w", "W", "power", "measurement"),
    SensorSpec("battery_v", "Battery voltage", "power", "battery_v", "V", "voltage", "measurement"),
    SensorSpec("load", "Load power", "power", "load_w", "W", "power", "measurement"),
    SensorSpec("pv_energy", "PV energy", "power", "pv_energy_wh", "Wh", "energy", "total_increasing"),
    SensorSpec("printer_energy", "Printer energy", "power", "printer_energy_wh", "Wh", "energy",
               "total_increasing"),
    SensorSpec("printer", "Printer", "printer", "printer", icon="mdi:printer-3d"),
    SensorSpec("job", "Current job", "printer", "job_id", icon="mdi:file-document"),
    SensorSpec("job_state", "Job state", "printer", "job_state", icon="mdi:progress-clock"),
    SensorSpec("progress", "Job progress", "printer", "percent", "%", None, "measurement", "mdi:progress-check"),
    SensorSpec("queue", "Jobs queued", "plan", "queue_length", None, None, "measurement", "mdi:tray-full"),
    SensorSpec("waiting", "Why the next job waits", "plan", "waiting_reason", icon="mdi:timer-sand"),
    SensorSpec("forecast", "Forecast used", "plan", "forecast_source", icon="mdi:weather-partly-cloudy"),
    SensorSpec("next_window", "Next energy window", "plan", "next_window_start_s", None, "timestamp"),
]


def _device(node_id: str) -> dict[str, object]:
    return {"identifiers": [f"printnode_{node_id}"], "name": f"Print node {node_id}",
            "manufacturer": "Solar Print Node"}


def _availability(node_id: str) -> dict[str, str]:
    return {"availability_topic": state_topic(node_id, "online"),
            "availability_template": "{{ 'online' if (value_json.online | default(false)) else 'offline' }}"}


def value_template(spec: SensorSpec) -> str:
    """The field, or none (HA: unknown) when it is null or absent."""
    if spec.device_class == "timestamp":
        return (f"{{% set t = value_json.{spec.field} | default(none) %}}"
                "{{ as_datetime(t) if t is not none else none }}")
    return f"{{{{ value_json.{spec.field} | default(none) }}}}"


def sensor_config(node_id: str, spec: SensorSpec) -> dict[str, object]:
    object_id = f"printnode_{node_id}_{spec.suffix}"
    config: dict[str, object] = {
        "name": spec.name, "unique_id": object_id, "object_id": object_id,
        "state_topic": state_topic(node_id, spec.doc), "value_template": value_template(spec),
        **_availability(node_id), "device": _device(node_id),
    }
    for key, value in (("unit_of_measurement", spec.unit), ("device_class", spec.device_class),
                       ("state_class", spec.state_class), ("icon", spec.icon)):
        if value is not None:
            config[key] = value
    return config


def button_config(node_id: str, verb: str) -> dict[str, object]:
    object_id = f"printnode_{node_id}_{verb}"
    return {"name": f"{verb.capitalize()} job", "unique_id": object_id, "object_id": object_id,
            "command_topic": ha_command_topic(node_id), "payload_press": verb, "qos": 1, "retain": False,
            "icon": {"pause": "mdi:pause", "resume": "mdi:play", "cancel": "mdi:stop"}[verb],
            **_availability(node_id), "device": _device(node_id)}


def discovery_messages(node_id: str) -> list[tuple[str, bytes]]:
    """(topic, retained payload) for every sensor and button of ``node_id``."""
    out = [(f"{DISCOVERY_PREFIX}/sensor/{node_id}/{spec.suffix}/config",
            json.dumps(sensor_config(node_id, spec)).encode()) for spec in SENSORS]
    out += [(f"{DISCOVERY_PREFIX}/button/{node_id}/{verb}/config", json.dumps(button_config(node_id, verb)).encode())
            for verb in BUTTON_VERBS]
    return out
