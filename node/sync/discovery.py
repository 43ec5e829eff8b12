"""Optional Home Assistant MQTT discovery: retained config topics so HA shows the node with no setup.

Each sensor points at one of the node's plain-JSON retained state topics and picks a field with a
``value_template``; availability follows ``state/online`` (the last will).  Reference: Home
Assistant, "MQTT Discovery" (``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config``).
We use the optional node-id level with our node id, so the broker ACL can give each node
``homeassistant/sensor/%u/+/config`` (Mosquitto substitutes ``%u`` only as a whole level).
"""
from __future__ import annotations

import json

from node.sync.protocol import state_topic

DISCOVERY_PREFIX = "homeassistant"

#: (object suffix, name, state topic, JSON field, unit, device class)
SENSORS = [
    ("soc", "State of charge", "power", "soc_pct", "%", "battery"),
    ("pv", "PV power", "power", "pv_w", "W", "power"),
    ("battery_v", "Battery voltage", "power", "battery_v", "V", "voltage"),
    ("printer", "Printer", "printer", "printer", None, None),
    ("job", "Current job", "printer", "job_id", None, None),
    ("progress", "Job progress", "printer", "percent", "%", None),
    ("next_window", "Next energy window", "plan", "next_window_start_s", None, None),
]


def discovery_messages(node_id: str) -> list[tuple[str, bytes]]:
    """(topic, retained payload) for every sensor of ``node_id``."""
    device = {"identifiers": [f"printnode_{node_id}"], "name": f"Print node {node_id}",
              "manufacturer": "Solar Print Node"}
    out = []
    for suffix, name, topic, field, unit, device_class in SENSORS:
        object_id = f"printnode_{node_id}_{suffix}"
        config: dict[str, object] = {
            "name": name, "unique_id": object_id, "state_topic": state_topic(node_id, topic),
            "value_template": f"{{{{ value_json.{field} }}}}",
            "availability_topic": state_topic(node_id, "online"),
            "availability_template": "{{ 'online' if value_json.online else 'offline' }}",
            "device": device,
        }
        if field == "next_window_start_s":
            config["value_template"] = ("{{ as_datetime(value_json.next_window_start_s) "
                                        "if value_json.next_window_start_s is defined else none }}")
            config["device_class"] = "timestamp"
        if unit:
            config["unit_of_measurement"] = unit
        if device_class:
            config["device_class"] = device_class
        out.append((f"{DISCOVERY_PREFIX}/sensor/{node_id}/{suffix}/config", json.dumps(config).encode()))
    return out
