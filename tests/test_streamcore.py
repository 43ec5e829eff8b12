from hypothesis import given
from hypothesis import strategies as st

from node.native import NativeCoreMissing, load_core, streamcore


def xor(data: bytes) -> int:
    value = 0
    for b in data:
        value ^= b
    return value


def test_frame_matches_marlin_format() -> None:
    assert streamcore.frame(1, b"G28") == b"N1 G28*18\n"
    framed = streamcore.frame(123456, b"G1 X10.5 Y-3 E0.12345 F1800")
    body, checksum = framed.rstrip(b"\n").rsplit(b"*", 1)
    assert body == b"N123456 G1 X10.5 Y-3 E0.12345 F1800" and int(checksum) == xor(body)


@given(st.binary(max_size=200))
def test_checksum_is_xor(data: bytes) -> None:
    assert streamcore.checksum(data) == xor(data)


@given(st.binary(min_size=1, max_size=80), st.integers(0, 79), st.integers(1, 255))
def test_any_single_corrupted_byte_changes_the_checksum(data: bytes, pos: int, flip: int) -> None:
    pos %= len(data)
    corrupted = bytearray(data)
    corrupted[pos] ^= flip
    assert streamcore.checksum(bytes(corrupted)) != streamcore.checksum(data)


def test_clean_strips_comments_and_whitespace() -> None:
    assert streamcore.clean(b"  G1 X1 Y2 ; move\r") == b"G1 X1 Y2"
    assert streamcore.clean(b"; only a comment") == b""
    assert streamcore.clean(b"\t\r") == b""


lines_strategy = st.lists(st.text(alphabet="GMXYZEF0123456789. ;-\t", max_size=40), max_size=60)


@given(lines_strategy, st.lists(st.integers(1, 50), min_size=1, max_size=20), st.booleans())
def test_splitting_is_independent_of_chunk_boundaries(lines: list[str], cuts: list[int], final_newline: bool) -> None:
    data = ("\n".join(lines) + ("\n" if final_newline else "")).encode()
    whole = streamcore.LineSplitter()
    expected = whole.feed(data) + whole.finish()
    splitter = streamcore.LineSplitter()
    got, pos, i = [], 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        got += splitter.feed(data[pos:pos + step])
        pos, i = pos + step, i + 1
    got += splitter.finish()
    assert got == expected
    for offset, command in got:  # offsets point at the raw line in the file
        raw_line = data[offset:].split(b"\n", 1)[0]
        assert streamcore.clean(raw_line) == command


def test_overlong_line_is_reported_by_position() -> None:
    splitter = streamcore.LineSplitter(max_line_bytes=16)
    out = splitter.feed(b"G28\n" + b"X" * 40) + splitter.feed(b"Y" * 40 + b"\nM84\n")
    assert out == [(0, b"G28"), (4, None), (85, b"M84")]


def test_missing_core_is_a_clear_error() -> None:
    try:
        load_core("no_such_core")
    except NativeCoreMissing as exc:
        assert "make build" in str(exc) and "no pure-Python fallback" in str(exc)
    else:
        raise AssertionError("expected NativeCoreMissing")
