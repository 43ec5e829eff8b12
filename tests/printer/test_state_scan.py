"""The native resume scan (streamcore.ModalScan behind resume.state_at) against the Python reference
(resume.apply): the same state at any offset of generated G-code, whatever the chunking."""
from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from node.native import streamcore
from node.printer.resume import LAYER_MARKERS, ModalState, apply, state_at, state_at_reference

NUMBERS = st.one_of(
    st.floats(-500, 500, allow_nan=False).map(lambda v: f"{v:.{abs(hash(v)) % 6}f}"),
    st.integers(-300, 300).map(str),
    st.sampled_from(["", "-", ".", "+5", "1e3", "2E-2", "1_0", "nan", "inf", "-inf", "1e999", "0x10", "5.",
                     ".5", "--1", "1.2.3", "١", "\x00", "٣٠", "12abc", "00012.50"]),
)
LETTERS = st.sampled_from(list("XYZEFSRIJPTxyzefsr*;"))
WORD = st.tuples(LETTERS, NUMBERS).map(lambda t: t[0] + t[1])
HEADS = st.sampled_from(["G0", "G1", "G2", "G3", "g1", "G01", "G92", "G90", "G91", "M82", "M83", "M104", "M109",
                         "M140", "M190", "M106", "M107", "G28", "T0", "T1", "t2", "T255", "T256", "T", "M117",
                         "G4", "G1.5", "G9", "M1040", "N5", "G28X"])
SEPARATORS = st.sampled_from([" ", " ", " ", "  ", "\t", " \t"])


@st.composite
def gcode_line(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.sampled_from([";LAYER_CHANGE", ";LAYER:3", "; LAYER_CHANGE", ";Z:0.4", "", "   ",
                                     ";LAYER_CHANGE extra", ";layer:2", "\t;LAYER:1"]))
    head = draw(HEADS)
    words = draw(st.lists(WORD, max_size=5))
    sep = draw(SEPARATORS)
    line = draw(st.sampled_from(["", " ", "\t"])) + head
    for word in words:
        line += draw(SEPARATORS) + word
    if draw(st.booleans()):
        line += sep + ";" + draw(st.sampled_from(["comment", "G1 X99", " move"]))
    return line + draw(st.sampled_from(["", "", "\r", " "]))


def reference(data: bytes, max_line_bytes: int) -> dict[str, object]:
    """resume.state_at_reference's rules on bytes: LineSplitter, apply, layer markers."""
    state = ModalState()
    splitter = streamcore.LineSplitter(max_line_bytes=max_line_bytes)
    for _, command in splitter.feed(data):
        if command is not None:
            apply(state, command)
    state.layer = sum(1 for line in data.split(b"\n")[:-1] if line.startswith(LAYER_MARKERS))
    return state.as_dict()


def native(data: bytes, max_line_bytes: int, chunk: int) -> dict[str, object]:
    scan = streamcore.ModalScan(max_line_bytes)
    for start in range(0, len(data), chunk):
        scan.feed(data[start:start + chunk])
    return scan.state()


@settings(max_examples=400, deadline=None)
@given(st.lists(gcode_line(), min_size=1, max_size=80), st.integers(0, 10_000), st.integers(1, 300),
       st.sampled_from([4096, 24]))
def test_native_scan_matches_the_python_reference(lines: list[str], cut: int, chunk: int, max_line: int) -> None:
    data = "\n".join(lines).encode("utf-8", "surrogateescape") + b"\n"
    end = cut % (len(data) + 1)  # any offset: a line start, or inside a line (that line has not run)
    prefix = data[:end]
    assert native(prefix, max_line, chunk) == reference(prefix, max_line)


def test_state_at_files_native_and_reference_agree(tmp_path: Path) -> None:
    path = tmp_path / "job.gcode"
    body = ["M140 S60", "M104 S215", "G28", "G90", "M82", "G92 E0", ";LAYER_CHANGE", "G1 Z0.2 F600",
            "G1 X10.5 Y20 E1.25 F1800", "G2 X20 Y20 I5 J0 E2.5", "M106 S300", "G91", "G1 X-1 Y-1 E0.1",
            "M83", "G1 E-0.8 F2400", "G90", "T1", ";LAYER:1", "G92 X0 Y0", "G3 X5 Y5 R3 E0.2", "M107",
            "M109 R190", "G28 X", "G1 X1 ; cut here"]
    path.write_text("\n".join(body) * 50 + "\n")
    data = path.read_bytes()
    offsets = [0, 1, len(data) // 3, len(data) // 2 + 7, len(data) - 5, len(data)]
    for offset in offsets + [i for i in range(len(data)) if data[i - 1:i] == b"\n"][::37]:
        for chunk in (5, 1 << 20):
            assert state_at(path, offset, chunk_bytes=chunk) == state_at_reference(path, offset), offset
    last = state_at(path, len(data))
    assert last.layer == 100 and last.tool == 1 and last.fan_pwm == 0 and last.hotend_c == 190
    assert last.x == 1 and last.y == 5 and last.absolute_xyz and last.absolute_e  # G90 after M83: E absolute too


def test_overlong_lines_are_skipped_but_their_layer_markers_counted() -> None:
    long_move = b"G1 X" + b"9" * 50
    data = b"G1 X5\n;LAYER_CHANGE " + b"x" * 60 + b"\n" + long_move + b"\nG1 Y7\n"
    for chunk in (1, 3, 16, 1000):
        assert native(data, 24, chunk) == reference(data, 24)
    assert native(data, 24, 7)["x"] == 5 and native(data, 24, 7)["layer"] == 1
