"""Fuzz suites of issue #14, one per input surface, each with the property it holds (hypothesis,
derandomized by tests/conftest.py; ``PRINTNODE_FUZZ_EXAMPLES`` raises the count: bench/fuzz.py).

* G-code into the gate: **nothing forbidden passes under any spelling**, and **every line is
  refused or framed** (a line the gate lets through reaches a Marlin-style reader, after the
  sender's framing, as exactly that command, with nothing forbidden or over the limits in it).
* Config TOML and ``config set``: **a valid config or an error naming the key; the node still starts**.
* VE.Direct blocks and Modbus registers: **no implausible value passes**.
* Control-socket requests: **every request gets one answer, and the daemon lives**.
(MQTT payloads into sync: **nothing unsigned acts**, tests/sync/test_sync_offline_and_fuzz.py.)
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from node.config import ConfigError, NodeConfig, load_config, write_override
from node.native import streamcore
from node.power.config import BatterySection
from node.power.sources.modbus import EPEVER_BLOCKS, RENOGY_BLOCKS, decode_epever, decode_renogy
from node.power.sources.vedirect import VEDirectParser, decode_fields, encode_block, record_to_reading
from node.power.telemetry import ReadingRejected, check_reading
from node.printer.config import SafetySection
from node.printer.policy import STRING_COMMANDS, PolicyRules, check_command

EXAMPLES = int(os.environ.get("PRINTNODE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SAFETY = SafetySection()
RULES = PolicyRules.from_config(SAFETY, max_wire_bytes=128)
FORBIDDEN = sorted(RULES.forbidden)


# --- G-code into the gate -------------------------------------------------------------------
@st.composite
def spelled(draw: st.DrawFn, name: str) -> str:
    """``name`` (M500) as some firmware would still read it: case, spaces, zeros, a subcode."""
    letter, number = name[0], name[1:]
    letter = draw(st.sampled_from([letter, letter.lower()]))
    return (letter + draw(st.sampled_from(["", " ", "  ", "\t"])) + "0" * draw(st.integers(0, 3)) + number
            + draw(st.sampled_from(["", ".1", "S1", " S1", "\tS1", "P0"])))


@st.composite
def hidden_forbidden(draw: st.DrawFn) -> bytes:
    """A line that carries a forbidden command in one of the places firmware looks."""
    command = draw(spelled(draw(st.sampled_from(FORBIDDEN))))
    innocent = draw(st.sampled_from(["G4 P0", "G1 X1 Y2", "M105", "G92 E0", "T0"]))
    place = draw(st.sampled_from(["alone", "numbered", "after_cr", "before_cr", "as_parameter"]))
    line = {"alone": command, "numbered": f"N{draw(st.integers(0, 99999))} {command}",
            "after_cr": f"{innocent}\r{command}", "before_cr": f"{command}\r{innocent}",
            "as_parameter": f"G1 X1 {command}"}[place]
    return line.encode()


@FUZZ
@given(hidden_forbidden())
def test_nothing_forbidden_passes_under_any_spelling(line: bytes) -> None:
    assert check_command(line, RULES) is not None, line


@st.composite
def hot(draw: st.DrawFn) -> bytes:
    head = draw(st.sampled_from(["M104", "M109", "m104", "M 104", "M0104", "M140", "M190"]))
    limit = SAFETY.max_bed_c if "14" in head.replace("104", "") or "19" in head else SAFETY.max_hotend_c
    value = draw(st.floats(limit + 1.0, 5000, allow_nan=False))  # over the limit in every spelling below
    spelled_value = draw(st.sampled_from([f"{value:.1f}", f"{value:.0f}", f"+{value:.2f}", f"0{value:.1f}"]))
    return f"{head} {draw(st.sampled_from(['S', 's', 'R', 'S ']))}{spelled_value}".encode()


@FUZZ
@given(hot())
def test_no_temperature_over_the_limit_passes(line: bytes) -> None:
    assert check_command(line, RULES) is not None, line


@FUZZ
@given(st.sampled_from(["G1", "M104", "M140", "M106", "G92", "M204", "T0"]), st.sampled_from("XYZESRBFP"),
       st.one_of(st.integers(0, 10**6).map(lambda v: f"0x{v:x}"), st.floats(0, 1e6).map(lambda v: f"{v:e}"),
                 st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e2", "1E+3", "0X1F", "1.2.3"])),
       st.sampled_from(["", " ", "  "]))
def test_no_value_outside_plain_decimals_passes(head: str, letter: str, value: str, space: str) -> None:
    """Firmware read parameters with strtod: hex, exponents, inf and nan would all be numbers to it."""
    assert check_command(f"{head} {letter}{space}{value}".encode(), RULES) is not None


_WORD = re.compile(rb"([A-Za-z])[ ]*")
#: what a C library's strtod takes after a parameter letter: hex, exponents, inf and nan included
_STRTOD = re.compile(rb"[+-]?(?:0[xX][0-9a-fA-F]*\.?[0-9a-fA-F]*(?:[pP][+-]?[0-9]+)?|inf(?:inity)?|nan"
                     rb"|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)", re.IGNORECASE)


def marlin_reads(framed: bytes) -> list[bytes]:
    """What a Marlin-style reader executes from one framed line: it checks the checksum, drops
    the line number, and takes each CR-separated piece as a command (an oracle written apart
    from node.printer.policy)."""
    body, _, star = framed.rstrip(b"\n").rpartition(b"*")
    assert int(star) == streamcore.checksum(body), framed
    number, _, rest = body.partition(b" ")
    assert number.startswith(b"N")
    return [piece.replace(b"\t", b" ").strip() for piece in rest.split(b"\r") if piece.strip()]


def _strtod(raw: bytes) -> float:
    text = raw.decode().lower().lstrip("+")
    negative = text.startswith("-")
    body = text.lstrip("-")
    if body.startswith("0x"):
        value = float.fromhex(body) if len(body) > 2 and body != "0x." else 0.0
    else:
        value = float(body)
    return -value if negative else value


def _commands_seen(piece: bytes) -> tuple[str | None, list[tuple[str, float]]]:
    """The head command (letter and integer) and every later letter with the value a lenient,
    strtod-reading firmware would give it."""
    words: list[tuple[str, float | None]] = []
    head = re.match(rb"([A-Za-z]) *([0-9]+)", piece)  # a command number is read as an integer, never strtod
    if head is None:
        return None, []
    words.append((head.group(1).upper().decode(), float(head.group(2))))
    pos = head.end()
    while (letter := _WORD.search(piece, pos)) is not None:
        number = _STRTOD.match(piece, letter.end())
        value = None
        if number is not None and number.group().strip(b"+-."):
            try:
                value = _strtod(number.group())
            except ValueError:
                value = None
        words.append((letter.group(1).upper().decode(), value))
        pos = number.end() if number is not None and number.end() > letter.end() else letter.end()
    return f"{words[0][0]}{int(words[0][1])}", [(w, v) for w, v in words[1:] if v is not None]


@st.composite
def gcodeish(draw: st.DrawFn) -> bytes:
    """Slicer-like lines with a hostile streak: odd heads, odd separators, strtod-style values."""
    head = draw(st.sampled_from(["G1", "g1", "M104", "M104", "M109", "M140", "M140", "M190", "M 104", "M500", "M117",
                                 "T0", "N5 G1", "M106", "G92"]))
    parts = [head]
    for _ in range(draw(st.integers(0, 3))):
        letter = draw(st.sampled_from(["X", "S", "E", "R", "B", "M", "G", "x", "s", "F"]))
        value = draw(st.sampled_from(["0", "1.5", "-2", "+.5", "200", "400", "0x190", "4e2", "1E3", "nan", "inf",
                                      "1.2.3", "", " 300", "0500", "-inf"]))
        parts.append(draw(st.sampled_from([" ", "", "\t", "\r", "  "])) + letter + value)
    tail = draw(st.sampled_from(["", "", "", " ", "*", "\x00", "é", "{x}", "\r" + draw(st.sampled_from(FORBIDDEN))]))
    return ("".join(parts) + tail).encode()


@FUZZ
@given(st.binary(max_size=60).filter(lambda b: b"\n" not in b), st.integers(1, 9_999_999))
def test_every_random_line_is_refused_or_framed_as_exactly_itself(raw: bytes, line_number: int) -> None:
    test_every_line_is_refused_or_framed_as_exactly_itself.hypothesis.inner_test(raw, line_number)


@FUZZ
@given(gcodeish(), st.integers(1, 9_999_999))
def test_every_line_is_refused_or_framed_as_exactly_itself(raw: bytes, line_number: int) -> None:
    command = streamcore.clean(raw)
    assume(command)
    if check_command(command, RULES) is not None:
        return  # refused: it never reaches the printer
    framed = streamcore.frame(line_number, command)
    assert len(framed) <= RULES.max_wire_bytes
    pieces = marlin_reads(framed)
    assert b"\r".join(pieces).replace(b"\t", b" ") == b"\r".join(
        p.replace(b"\t", b" ").strip() for p in command.split(b"\r") if p.strip())
    for piece in pieces:
        head, values = _commands_seen(piece)
        if head is None or head in STRING_COMMANDS:
            continue
        assert head not in RULES.forbidden, piece
        for letter, value in values:
            assert math.isfinite(value)
            if letter in "GM":
                assert f"{letter}{int(value)}" not in RULES.forbidden, piece
            if head in ("M104", "M109") and letter in "SRB":
                assert value <= SAFETY.max_hotend_c, piece
            if head in ("M140", "M190") and letter in "SR":
                assert value <= SAFETY.max_bed_c, piece


# --- config TOML and config set -------------------------------------------------------------
KEYS = {"printer": ["baud", "max_commands", "tickle_s", "port", "bogus"], "battery": ["cells", "capacity_ah",
        "absorption_v", "float_v", "chemistry"], "clock": ["time_scale", "start"], "jobs": ["sample_jobs"],
        "node": ["state_dir", "id"], "nonsense": ["x"]}
values = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=32),
                   st.text(max_size=12), st.booleans(), st.lists(st.integers(), max_size=3))


@st.composite
def config_tree(draw: st.DrawFn) -> dict:
    tree: dict = {}
    for section in draw(st.lists(st.sampled_from(sorted(KEYS)), max_size=4, unique=True)):
        tree[section] = {key: draw(values) for key in draw(st.lists(st.sampled_from(KEYS[section]), max_size=3,
                                                                     unique=True))}
    return tree


@FUZZ
@given(config_tree())
def test_a_config_file_loads_or_names_its_key(tmp_path: Path, tree: dict) -> None:
    tree.setdefault("node", {})["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "node.toml"
    path.write_text(tomli_w.dumps(tree))
    try:
        load_config(path, use_overrides=False)
    except ConfigError as exc:
        assert exc.problems and all(re.match(r"^[a-z_]+(\.[a-z_0-9]+)*: ", p) for p in exc.problems), exc.problems


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([f"{s}.{k}" for s in KEYS for k in KEYS[s]]), values), max_size=5),
       st.sampled_from(["cli", "hub"]))
def test_settings_never_stop_the_next_start(tmp_path_factory: pytest.TempPathFactory, assignments: list,
                                            source: str) -> None:
    state = tmp_path_factory.mktemp("state")
    config = load_config(sets=[f"node.state_dir='{state}'", "battery.cells=8"])
    for key, value in assignments:
        try:
            write_override(config, f"{key}={json.dumps(value)}", source)  # type: ignore[arg-type]
        except ConfigError as exc:
            assert exc.problems
    started = load_config(sets=[f"node.state_dir='{state}'", "battery.cells=8"])
    assert isinstance(started, NodeConfig) and started.overrides_problem is None


# --- charge-controller frames -----------------------------------------------------------------
BATTERY = BatterySection()


def _plausible(reading) -> None:  # noqa: ANN001
    low, high = BATTERY.cells * 2.0, BATTERY.cells * 4.0  # LiFePO4 cell limits
    for name in ("pv_w", "pv_v", "battery_v", "battery_a", "load_w", "soc_pct", "battery_temperature_c"):
        value = getattr(reading, name)
        assert value is None or math.isfinite(value), (name, value)
    assert reading.battery_v is None or low <= reading.battery_v <= high
    assert reading.battery_a is None or abs(reading.battery_a) <= 10 * BATTERY.capacity_ah
    assert reading.soc_pct is None or 0 <= reading.soc_pct <= 100
    assert reading.pv_w is None or 0 <= reading.pv_w <= 100_000
    assert reading.battery_temperature_c is None or -40 <= reading.battery_temperature_c <= 85


field_value = st.one_of(st.integers(-2**31, 2**31).map(str),
                        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8),
                        st.sampled_from(["nan", "inf", "-1", "0x10"]))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["V", "I", "VPV", "PPV", "SOC", "T", "CS", "P", "IL", "H19", "ERR", "X"]),
                          field_value), min_size=1, max_size=10, unique_by=lambda kv: kv[0]))
def test_no_implausible_vedirect_value_passes(fields: list) -> None:
    parser = VEDirectParser()
    for block in parser.feed(encode_block(fields)):
        reading = record_to_reading(decode_fields(block))
        try:
            check_reading(reading, BATTERY)
        except ReadingRejected:
            continue
        _plausible(reading)


@FUZZ
@given(st.sampled_from(["epever", "renogy"]), st.data())
def test_no_implausible_modbus_value_passes(device: str, data: st.DataObject) -> None:
    blocks, decode = (EPEVER_BLOCKS, decode_epever) if device == "epever" else (RENOGY_BLOCKS, decode_renogy)
    registers = {start + i: data.draw(st.integers(0, 0xFFFF)) for start, count in blocks for i in range(count)}
    try:
        reading = decode(registers)
    except ValueError:
        return  # a register set the decoder itself refuses
    try:
        check_reading(reading, BATTERY)
    except ReadingRejected:
        return
    _plausible(reading)


# --- control-socket requests ------------------------------------------------------------------
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), st.text(max_size=20),
                      st.floats(allow_nan=False))
requests = st.one_of(
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"") + b"\n"),
    st.fixed_dictionaries({"cmd": st.sampled_from(["status", "queue_list", "job_show", "cancel", "pause", "resume",
                                                   "plan", "plate_cleared", "config_set", "queue_add", "boom"])},
                          optional={"job": st.text(max_size=12), "all": json_leaf, "assignment": st.text(max_size=30),
                                    "name": st.text(max_size=10), "size_bytes": st.integers(-5, 50),
                                    "extra": json_leaf}).map(lambda d: json.dumps(d).encode() + b"\n"),
)


def test_every_control_request_gets_one_answer_and_the_daemon_lives(daemon_factory) -> None:
    daemon = daemon_factory("jobs.queue_sample_when_empty=false", "planner.enabled=false", "control.read_timeout_s=0.5")
    path = daemon.state_dir / "control.sock"

    @FUZZ
    @given(requests)
    def one(raw: bytes) -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(raw)
            answer = sock.makefile("rb").read()
        lines = answer.splitlines()
        assert len(lines) == 1, answer
        reply = json.loads(lines[0])
        assert isinstance(reply["ok"], bool) and (reply["ok"] or reply["error"])
        assert "Traceback" not in (reply.get("error") or "")

    one()
    assert daemon.process.poll() is None
    assert daemon.request({"cmd": "status"})["node_id"]
