"""TLS with client certificates and the per-node ACL pattern: a node reaches only its own topics."""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from sync_harness import gcode_file, ledger_rows, make_hub, node_config, running_node, wait_for

from node.hub.server import submit_job
from node.jobs import JobState
from node.sync import protocol as p
from node.sync.mqtt import connect_async, make_client


def test_job_over_tls_with_client_certificates(tls_broker, tmp_path: Path):
    async def main() -> None:
        hub = make_hub(tmp_path / "hub", tls_broker)
        try:
            source = gcode_file(tmp_path / "part.gcode", 50_000)
            job_id = submit_job(hub.ledger, hub.files_dir, source, node_id="n1")
            async with running_node(node_config(tmp_path / "n1", tls_broker, "n1", [hub.key.public_hex])) as rn:
                async def queued():
                    job = await rn.jobs.get(job_id)
                    return job is not None and job.state == JobState.QUEUED
                await wait_for(queued, what="job queued over TLS")
                await wait_for(lambda: ledger_rows(hub, "SELECT 1 FROM jobs WHERE version = 3"), what="reports")
        finally:
            hub.stop()

    asyncio.run(main())


class Spy:
    """A raw MQTT v5 client authenticated as ``name`` that records what it receives and its SUBACKs."""

    def __init__(self, broker, name: str) -> None:
        self.settings = broker.settings(name, cert_for=name)
        self.settings.persistent = False
        self.client = make_client(self.settings)
        self.received: list[tuple[str, bytes]] = []
        self.suback: list[int] = []
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, pr: self.connected.set()
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, bytes(m.payload)))

        def on_subscribe(c, u, mid, reason_codes, props):  # noqa: ANN001
            self.suback = [rc.value for rc in reason_codes]
            self.subscribed.set()
        self.client.on_subscribe = on_subscribe
        connect_async(self.client, self.settings)
        self.client.loop_start()
        assert self.connected.wait(10), f"{name} could not connect"

    def subscribe(self, topic: str) -> list[int]:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(5)
        return self.suback

    def publish(self, topic: str, payload: bytes) -> int:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        return info.rc

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_another_nodes_topics_are_refused(tls_broker, tmp_path: Path):
    hub = make_hub(tmp_path / "hub", tls_broker)
    intruder = Spy(tls_broker, "n2")
    try:
        assert hub.connected.wait(10)
        # Mosquitto 2.0 may grant the SUBSCRIBE (or answer 0x87) but checks read access on every
        # message: what counts is that nothing of n1's reaches n2 (asserted below)
        intruder.subscribe(p.down_topic("n1", "#"))
        intruder.subscribe(p.state_topic("n1", "#"))
        assert intruder.subscribe(p.down_topic("n2", "#")) == [1]  # its own: granted QoS 1
        # writing into n1's uplink is dropped by the broker: the hub never sees it
        forged = p.JobStateReport(node_id="n1", t_s=time.time(), job_id="x", version=9, node_state="completed",
                                  wire_state=p.WireState.SUCCEEDED)
        intruder.publish(p.up_topic("n1", "job_state"), forged.model_dump_json().encode())
        # its own uplink works, and lands in the ledger: proof the path is live while n1's is not
        own = forged.model_copy(update={"node_id": "n2", "id": p.new_id()})
        intruder.publish(p.up_topic("n2", "job_state"), own.model_dump_json().encode())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not ledger_rows(hub, "SELECT 1 FROM received WHERE node_id = 'n2'"):
            time.sleep(0.05)
        assert ledger_rows(hub, "SELECT 1 FROM received WHERE node_id = 'n2'")
        assert not ledger_rows(hub, "SELECT 1 FROM received WHERE node_id = 'n1'")
        # a hub message to n1 does not reach n2 either
        hub.client.publish(p.down_topic("n1", "ack"), b'{"ids": []}', qos=1).wait_for_publish(5)
        hub.client.publish(p.state_topic("n1", "online"), b'{"online": true}', qos=1).wait_for_publish(5)
        hub.client.publish(p.down_topic("n2", "ack"), b'{"ids": []}', qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not intruder.received:
            time.sleep(0.05)
        assert intruder.received and {t for t, _ in intruder.received} == {p.down_topic("n2", "ack")}
    finally:
        intruder.close()
        hub.stop()


def test_a_client_without_a_certificate_is_refused(tls_broker):
    settings = tls_broker.settings("n3")
    settings.cert_file = settings.key_file = None
    client = make_client(settings)
    result: list[object] = []
    done = threading.Event()

    def on_connect(c, u, f, rc, pr):  # noqa: ANN001
        result.append(rc)
        done.set()
    client.on_connect = on_connect
    client.on_disconnect = lambda *a: done.set()
    try:
        connect_async(client, settings)
        client.loop_start()
        done.wait(10)
        assert not result or result[0].is_failure
    finally:
        client.loop_stop()
