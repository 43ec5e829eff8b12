"""Pure protocol pieces: topics, wire states, chunk frames, telemetry encoding, requirements."""
from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.jobs import TRANSITIONS, JobState
from node.sync import protocol as p


def test_every_node_state_has_a_wire_state_and_final_states_are_terminal_on_the_wire():
    for state in JobState:
        assert isinstance(p.wire_state(state), p.WireState)
    for state, targets in TRANSITIONS.items():
        if not targets:  # final on the node
            assert p.wire_state(state) in p.TERMINAL_WIRE_STATES
    assert p.wire_state(JobState.FAILED) == p.WireState.FAILED  # may retry: not terminal
    assert p.WireState.FAILED not in p.TERMINAL_WIRE_STATES


def test_topics_round_trip_and_foreign_topics_are_refused():
    assert p.parse_topic(p.up_topic("n-1", "job_state")) == ("n-1", "up", "job_state")
    assert p.parse_topic(p.down_topic("n-1", "ack")) == ("n-1", "down", "ack")
    assert p.parse_topic("printnode/v2/n-1/up/hello") is None
    assert p.parse_topic("printnode/v1/n-1/up") is None


def test_chunk_frame_round_trip_and_malformed_frames_raise():
    header = p.ChunkReply(job_id="j", offset=10, length=3, total_bytes=13, req_id="r")
    frame = p.encode_chunk(header, b"abc")
    assert p.decode_chunk(frame) == (header, b"abc")
    with pytest.raises(ValueError):
        p.decode_chunk(frame[:-1])  # length mismatch
    with pytest.raises(ValueError):
        p.decode_chunk(b"\x00\x00")
    with pytest.raises(ValueError):
        p.decode_chunk(b"\xff\xff\xff\xff{}")


def test_telemetry_round_trip_keeps_values_to_their_quantum():
    rows = [{"t_s": 1_000_020.0 + 60 * i, "pv_w": 100.04 + i, "battery_v": 12.831, "soc_pct": None if i == 2 else 55.55}
            for i in range(5)]
    batch = p.build_telemetry("n1", 1_000_400.0, rows, 60.0)
    back = p.telemetry_rows(p.decode_telemetry(p.encode_telemetry(batch)))
    assert [r["t_s"] for r in back] == [r["t_s"] for r in rows]
    for got, want in zip(back, rows, strict=True):
        assert got["pv_w"] == pytest.approx(want["pv_w"], abs=0.05)
        assert got["battery_v"] == pytest.approx(12.83, abs=0.006)
        assert (got["soc_pct"] is None) == (want["soc_pct"] is None)


def test_telemetry_decoder_refuses_a_zip_bomb_and_garbage():
    with pytest.raises(ValueError):
        p.decode_telemetry(zlib.compress(b" " * (17 * 1024 * 1024)))
    with pytest.raises(ValueError):
        p.decode_telemetry(b"not zlib")


def test_requirements_name_every_unmet_need():
    caps = p.PrinterCapabilities(profile="ender3", build_volume_mm=(220, 220, 250), nozzle_mm=0.4,
                                 materials=["PLA", "PETG"], max_hotend_c=260, max_bed_c=100)
    assert p.PrinterRequirements(min_build_volume_mm=(200, 200, 200), material="pla",
                                 max_hotend_c=215).unmet_by(caps) == []
    why = p.PrinterRequirements(min_build_volume_mm=(300, 200, 200), nozzle_mm=0.6, material="ABS",
                                max_hotend_c=300, max_bed_c=110).unmet_by(caps)
    assert len(why) == 5 and why[0].startswith("build volume x")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_frames_raise_value_error_or_decode(payload: bytes):
    for decode in (p.decode_chunk, p.decode_telemetry):
        try:
            decode(payload)
        except ValueError:
            pass
