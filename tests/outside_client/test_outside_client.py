"""An outside client, written from docs/protocol.md alone, speaks to a real node over a real Mosquitto.

``outside_client.py`` plays the hub with paho-mqtt, cryptography and the standard library, and reads the
field tables and the telemetry dictionary out of the document at run time: hello, a signed job with
its file served in chunks, the retained state, telemetry decoded with the document's dictionary, and
rejections as the document describes them.  Any message that does not match its table is a problem
the test reports.
"""
from __future__ import annotations

import ast
import asyncio
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from outside_client import OutsideHub, ProtocolDoc, telemetry_samples

from node.events import TelemetrySample
from node.jobs import JobState
from tests.sync.sync_harness import gcode_file, node_config, running_node, wait_for

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "protocol.md"
ALLOWED_IMPORTS = {"paho", "cryptography"} | set(sys.stdlib_module_names)


def test_the_outside_client_imports_only_paho_cryptography_and_the_standard_library() -> None:
    tree = ast.parse((HERE / "outside_client.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add((node.module or "").split(".")[0])
    assert "node" not in imported and "tests" not in imported
    assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS


def test_the_outside_client_speaks_to_a_real_node(mosquitto, tmp_path: Path) -> None:
    protocol = ProtocolDoc.read(DOC)
    hub = OutsideHub(protocol, "outside1")
    hub.start(mosquitto.host, mosquitto.port)

    async def until(predicate, what: str) -> None:  # noqa: ANN001
        """Wait for ``predicate``; a message that did not match the document fails at once, naming it."""
        await wait_for(lambda: hub.problems or predicate(), what=what)
        assert not hub.problems, hub.problems

    async def main() -> None:
        config = node_config(tmp_path / "node", mosquitto, "outside1", [hub.public_hex], state_interval_s=0,
                             chunk_bytes=4096)
        async with running_node(config) as rn:
            # hello: the node says who it is, which minor version it speaks, where it stands
            await until(lambda: hub.received("hello"), what="hello")
            hello = hub.received("hello")[0]
            assert hello["node_id"] == "outside1" and hello["protocol"] == 1 and hello["protocol_minor"] >= 1
            assert hello["site"]["timezone"] == config.site.timezone
            # a job: signed manifest, the file pulled in chunks, queued
            data = gcode_file(tmp_path / "part.gcode", 20_000).read_bytes()
            hub.submit("outside-job", data, requirements={"material": None})
            await until(lambda: any(r["job_id"] == "outside-job" and r["node_state"] == "queued"
                                       for r in hub.received("job_state")), what="queued at the node")
            assert len(hub.received("chunk_req")) >= len(data) // 4096
            job = await rn.jobs.get("outside-job")
            assert job.state == JobState.QUEUED and Path(job.file_path).read_bytes() == data
            versions = [r["version"] for r in hub.received("job_state") if r["job_id"] == "outside-job"]
            assert versions == sorted(versions) and versions[0] == 1
            # state: the retained printer document names the job and its version
            await until(lambda: any(d.get("job_id") == "outside-job" and d["job_version"] == job.version
                                       for d in hub.received("printer")), what="state/printer")
            # telemetry: decoded with the dictionary read out of the document
            t0 = (time.time() // 600 - 2) * 600
            for i in range(10):
                await rn.node.send_event("telemetry_sample", TelemetrySample(
                    t_s=t0 + 60 * i, source="sim", pv_w=100.0 + i, battery_v=13.2, soc_pct=50.0 + i / 10))
            await rn.node.send_event("telemetry_sample", TelemetrySample(t_s=t0 + 600, source="sim", pv_w=1.0))
            await until(lambda: hub.received("telemetry"), what="a telemetry batch")
            samples = telemetry_samples(hub.received("telemetry")[0])
            assert [s["t_s"] for s in samples] == [t0 + 60 * i for i in range(10)]
            assert [s["pv_w"] for s in samples] == [100.0 + i for i in range(10)]
            assert [s["soc_pct"] for s in samples] == [round(50.0 + i / 10, 6) for i in range(10)]
            await until(lambda: any(d["pv_w"] == 1.0 for d in hub.received("power")), what="state/power")
            # rejection: a manifest signed by a key the node does not trust -> REJECTED at version 0
            hub.submit("stranger-job", data, key=Ed25519PrivateKey.generate())
            await until(lambda: [r for r in hub.received("job_state") if r["job_id"] == "stranger-job"],
                           what="the rejection")
            (rejected,) = [r for r in hub.received("job_state") if r["job_id"] == "stranger-job"]
            assert rejected["wire_state"] == "REJECTED" and rejected["version"] == 0
            assert rejected["reason"].startswith("unknown key")
            assert await rn.jobs.get("stranger-job") is None
            # a body the document's table refuses (a field it does not list), signed right: "malformed"
            try:
                hub.protocol.check("JobManifest", hub.manifest("odd-job", data, colour="red"))
            except ValueError as exc:
                assert "colour" in str(exc)
            else:
                raise AssertionError("the document's JobManifest table took an unknown field")
            hub.submit("odd-job", data, check=False, colour="red")
            await until(lambda: [r for r in hub.received("job_state") if r["job_id"] == "odd-job"],
                        what="the malformed rejection")
            (odd,) = [r for r in hub.received("job_state") if r["job_id"] == "odd-job"]
            assert odd["wire_state"] == "REJECTED" and odd["version"] == 0 and odd["reason"].startswith("malformed")
            # a replayed manifest of a known job: the node re-sends the job's current state, no rejection
            before = len([r for r in hub.received("job_state") if r["job_id"] == "outside-job"])
            hub.seq -= 1  # the same sequence number again
            hub.submit("outside-job", data)
            await until(lambda: len([r for r in hub.received("job_state") if r["job_id"] == "outside-job"])
                           > before, what="the current state again")
            again = [r for r in hub.received("job_state") if r["job_id"] == "outside-job"][-1]
            assert again["node_state"] == "queued" and again["version"] == job.version
            # a command: cancel, answered with a result
            hub.seq += 1
            now = time.time()
            command = {"node_id": "outside1", "seq": hub.seq, "issued_s": now, "expires_s": now + 60,
                       "hub_time_s": now, "command_id": "c" * 32, "args": {"kind": "cancel", "job_id": "outside-job"}}
            hub.send("command", hub.signed(command, "Command"), "SignedEnvelope")
            await until(lambda: hub.received("command_result"), what="the command's result")
            assert hub.received("command_result")[0]["ok"] is True
            assert (await rn.jobs.get("outside-job")).state == JobState.CANCELLED
            await until(lambda: any(d.get("job_state") == "cancelled" for d in hub.received("printer")),
                        what="state/printer says cancelled")
        assert not hub.problems, hub.problems

    try:
        asyncio.run(main())
    finally:
        hub.stop()
