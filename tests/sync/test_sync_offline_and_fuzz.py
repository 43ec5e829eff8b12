"""The Sync component with no broker: it keeps the outbox; fuzzed hub payloads never crash it."""
from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_harness import node_config, start_node

from node.events import TelemetrySample
from node.jobs import JobState
from node.sync import protocol as p
from node.sync.signing import SigningKey

KEY = SigningKey.generate()


def test_offline_node_records_every_report_in_the_outbox(tmp_path: Path):
    async def main() -> None:
        rn = await start_node(node_config(tmp_path / "n1", None, "n1", [KEY.public_hex], telemetry_batch_s=600))
        try:
            assert not rn.sync.config.online
            sha = "ab" * 32
            await rn.store.run(lambda c: c.execute(
                "INSERT INTO gcode_analysis(file_sha256, profile_key, ambient_c, analysis_version, created_s,"
                " result_json) VALUES(?,?,?,?,?,?)", (sha, "ender3", 22.0, 1, 0.0, '{"filament_mm": [1200.5, 0.25]}')))
            job = await rn.jobs.create("local", "cli", state=JobState.QUEUED, file_sha256=sha)
            await rn.jobs.transition(job.id, JobState.PRINTING, "start")
            t0 = 1_750_000_200.0
            for i in range(0, 1200, 30):
                await rn.node.send_event("telemetry_sample", TelemetrySample(
                    t_s=t0 + i, source="sim", pv_w=120.0, printer_w=150.0, soc_pct=80.0))
            await rn.jobs.transition(job.id, JobState.COMPLETED, "done")
            kinds = [r.kind for r in await rn.sync.outbox.pending(100)]
            assert kinds.count("job_state") == 3
            assert kinds.count("telemetry") == 1
            assert kinds.count("job_record") == 1
            record = next(p.JobRecord.model_validate_json(r.payload) for r in await rn.sync.outbox.pending(100)
                          if r.kind == "job_record")
            assert record.outcome == p.WireState.SUCCEEDED
            assert record.energy_wh == pytest.approx(150.0 * 1170 / 3600, rel=1e-6)
            assert record.filament_mm == pytest.approx(1200.8)  # from the analysis cache, both tools
        finally:
            await rn.stop()

    asyncio.run(main())


class LoopThread:
    """An event loop on a thread, so hypothesis examples can share one running node."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro):  # noqa: ANN001, ANN201
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: pytest.TempPathFactory):
    runner = LoopThread()
    rn = runner.run(start_node(node_config(tmp_path_factory.mktemp("fuzz"), None, "n1", [KEY.public_hex])))
    yield runner, rn
    runner.run(rn.stop())
    runner.close()


def _signed_like(body: dict) -> bytes:
    """A well-formed envelope around a fuzzed body, with a bogus signature."""
    return json.dumps({"signed": json.dumps(body), "key_id": KEY.key_id, "sig": "AAAA"}).encode()


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
                           lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10),
                                                                                            children, max_size=4),
                           max_leaves=12)
payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["ids", "signed", "key_id", "sig", "job_id", "offset", "hub_time_s"]),
                    json_values, max_size=4).map(lambda d: json.dumps(d).encode()),
    st.dictionaries(st.sampled_from(["node_id", "seq", "job_id", "command_id", "expires_s", "args"]),
                    json_values, max_size=6).map(_signed_like),
    # properly signed by the trusted key, with a fuzzed body: past the signature, into the handlers
    st.fixed_dictionaries({"node_id": st.just("n1"), "seq": st.integers(-2, 10**6),
                           "issued_s": st.floats(allow_nan=False), "expires_s": st.just(4e9),
                           "hub_time_s": st.floats(allow_nan=True, allow_infinity=True)},
                          optional={"command_id": st.just("c" * 32) | st.text(max_size=33),
                           "args": st.fixed_dictionaries({"kind": st.sampled_from(
                               ["cancel", "pause", "resume", "plate_cleared", "cloud_forecast", "config", "x"])},
                               optional={"job_id": st.text(max_size=70), "expected_version": st.integers(),
                                         "points": json_values, "assignments": json_values}),
                           "job_id": st.text(max_size=70), "file_sha256": st.just("0" * 64),
                           "file_bytes": st.integers(-1, 10**12), "name": st.text(max_size=30),
                           "new_public_key": st.just("ab" * 32) | st.just(SigningKey.generate().public_hex)})
    .map(lambda body: KEY.sign_text(json.dumps(body)).model_dump_json().encode()),
)


@settings(max_examples=int(os.environ.get("PRINTNODE_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["ack", "job", "command", "key", "chunk", "bogus"]), payload=payloads)
def test_fuzzed_hub_payloads_never_crash_the_node(fuzz_node, kind: str, payload: bytes):
    """Nothing unsigned acts: whatever arrives, only what the hub's key signed creates or moves a job."""
    runner, rn = fuzz_node
    runner.run(rn.sync._handle_message(p.down_topic("n1", kind), payload))
    # the node still works: its store answers, every job it holds is a sane one, its own key still opens
    jobs = runner.run(rn.jobs.list())
    assert all(j.state in JobState and (j.source != "hub" or j.file_sha256 == "0" * 64) for j in jobs)
    assert KEY.public_hex in runner.run(rn.sync.inbox.trusted_keys())


def test_a_valid_signed_manifest_still_opens_after_the_fuzzing(fuzz_node):
    runner, rn = fuzz_node
    m = p.JobManifest(node_id="n1", seq=10**7, issued_s=rn.node.clock.time(), expires_s=rn.node.clock.time() + 60,
                      hub_time_s=1.0, job_id="fz1", name="x", file_sha256="0" * 64, file_bytes=5)
    runner.run(rn.sync._handle_message(p.down_topic("n1", "job"), KEY.sign(m).model_dump_json().encode()))
    job = runner.run(rn.jobs.get("fz1"))
    assert job is not None and job.state == JobState.DOWNLOADING


def test_tampered_unsigned_expired_and_replayed_commands_do_nothing(tmp_path: Path):
    async def main() -> None:
        rn = await start_node(node_config(tmp_path / "n1", None, "n1", [KEY.public_hex]))
        try:
            job = await rn.jobs.create("local", "cli", state=JobState.QUEUED)
            now = rn.node.clock.time()

            def command(seq: int, expires_s: float = now + 60, cid: str = "a" * 32) -> p.Command:
                return p.Command(node_id="n1", seq=seq, issued_s=now, expires_s=expires_s, hub_time_s=now,
                                 command_id=cid, args=p.CancelArgs(job_id=job.id))

            good = KEY.sign(command(5))
            tampered = good.model_copy(update={"signed": good.signed.replace('"seq":5', '"seq":6')})
            bad = {
                "bad signature": tampered.model_dump_json(),
                "unsigned": json.dumps({"signed": command(7, cid="b" * 32).model_dump_json(), "key_id": KEY.key_id,
                                        "sig": ""}),
                "expired": KEY.sign(command(8, expires_s=now - 1, cid="c" * 32)).model_dump_json(),
                "unknown key": SigningKey.generate().sign(command(9, cid="d" * 32)).model_dump_json(),
                "wrong node": KEY.sign(command(10, cid="e" * 32).model_copy(update={"node_id": "n2"}))
                .model_dump_json(),
            }
            for payload in bad.values():
                await rn.sync._handle_message(p.down_topic("n1", "command"), payload.encode())
            assert (await rn.jobs.get(job.id)).state == JobState.QUEUED
            results = [p.CommandResult.model_validate_json(r.payload) for r in await rn.sync.outbox.pending(100)
                       if r.kind == "command_result"]
            assert all(not r.ok for r in results)
            assert sorted(r.detail.split(":")[0] for r in results) == sorted(set(bad) - {"wrong node"})
            await rn.sync._handle_message(p.down_topic("n1", "command"), good.model_dump_json().encode())
            cancelled = await rn.jobs.get(job.id)
            assert cancelled.state == JobState.CANCELLED
            await rn.sync._handle_message(p.down_topic("n1", "command"), good.model_dump_json().encode())  # replay
            assert (await rn.jobs.get(job.id)).version == cancelled.version  # not executed twice
            answers = [p.CommandResult.model_validate_json(r.payload) for r in await rn.sync.outbox.pending(100)
                       if r.kind == "command_result" and b'"ok":true' in r.payload]
            assert len(answers) == 2 and answers[0].detail == answers[1].detail  # the replay got the same answer
        finally:
            await rn.stop()

    asyncio.run(main())
