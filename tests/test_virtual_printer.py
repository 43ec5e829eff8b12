"""The virtual printer over a real pseudo-terminal, through pyserial."""
import time

import serial

from node.native import streamcore
from node.printer.protocol import Kind, classify


def talk(port: serial.Serial, data: bytes, until: bytes = b"ok", timeout_s: float = 10.0) -> list[bytes]:
    port.write(data)
    lines: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = port.readline().rstrip(b"\r\n")
        if line:
            lines.append(line)
            if line.startswith(until):
                return lines
    raise AssertionError(f"no {until!r} in {lines}")


def test_line_numbers_checksums_and_resend(virtual_port) -> None:
    with serial.Serial(virtual_port.path, 115200, timeout=0.2) as port:
        assert talk(port, streamcore.frame(0, b"M110 N0")) == [b"ok"]
        assert talk(port, streamcore.frame(1, b"G28"))[-1] == b"ok"
        bad = bytearray(streamcore.frame(2, b"G1 X10 F3000"))
        bad[4] ^= 0x01  # one corrupted byte
        replies = talk(port, bytes(bad))
        assert [classify(r).kind for r in replies] == [Kind.ERROR, Kind.RESEND, Kind.OK]
        assert classify(replies[1]).line_number == 2
        assert talk(port, streamcore.frame(3, b"G1 X5"))[0].startswith(b"Error:Line Number")  # skipped 2
        assert talk(port, streamcore.frame(2, b"G1 X10 F3000")) == [b"ok"]
        assert talk(port, b"N3 G1 X5\n")[0].startswith(b"Error:No Checksum")


def test_temperature_report_and_heating_takes_time(virtual_port) -> None:
    with serial.Serial(virtual_port.path, 115200, timeout=0.2) as port:
        ok = classify(talk(port, b"M105\n")[-1])
        assert ok.kind == Kind.OK and ok.temperatures is not None and ok.temperatures.hotend_target_c == 0
        talk(port, b"M104 S200\n")
        start = virtual_port.printer.clock.time()
        lines = talk(port, b"M109 S200\n", timeout_s=30)
        waited_sim_s = virtual_port.printer.clock.time() - start
        # the profile's thermal model: ~100 s from 22 C to 200 C at full power
        assert 60 < waited_sim_s < 200, waited_sim_s
        reports = [classify(line) for line in lines if b"T:" in line]
        assert reports and all(r.temperatures is not None for r in reports)
        final = classify(talk(port, b"M105\n")[-1]).temperatures
        assert final is not None and abs(final.hotend_c - 200) < 2 and 0 < final.hotend_pwm < 1


def test_autoreport_and_capabilities(virtual_port) -> None:
    with serial.Serial(virtual_port.path, 115200, timeout=0.2) as port:
        caps = talk(port, b"M115\n")
        assert b"Cap:AUTOREPORT_TEMP:1" in caps
        talk(port, b"M155 S1\n")
        seen = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(seen) < 2:
            line = port.readline()
            if classify(line.strip()).kind == Kind.TEMPERATURE:
                seen.append(line)
        assert len(seen) >= 2


def test_moves_spend_sim_time_and_planner_gives_ok_before_execution(virtual_port) -> None:
    with serial.Serial(virtual_port.path, 115200, timeout=0.2) as port:
        clock = virtual_port.printer.clock
        talk(port, b"G1 X0 Y0 F6000\n")
        talk(port, b"M400\n")
        start = clock.time()
        talk(port, b"G1 X100 F600\n")  # 100 mm at 10 mm/s: 10 s of sim time, ok at once
        assert clock.time() - start < 5
        talk(port, b"M400\n", timeout_s=10)
        assert clock.time() - start >= 10


def test_unknown_command_is_echoed_and_acknowledged(virtual_port) -> None:
    with serial.Serial(virtual_port.path, 115200, timeout=0.2) as port:
        lines = talk(port, b"M9999\n")
        assert lines[0].startswith(b"echo:Unknown command") and lines[-1] == b"ok"


def test_an_emulated_link_answers_each_line_once_its_own_bytes_arrived() -> None:
    """At an emulated baud rate the host's bytes go through the stamping reader: several lines written at once
    come out one ``ok`` per line, in order."""
    import threading

    from node.clock import Clock
    from node.printer.profile import load_profile
    from node.printer.virtual import VirtualPrinter, serve_pty

    stop = threading.Event()
    path, printer, _ = serve_pty(lambda write: VirtualPrinter(load_profile("ender3"), Clock(0), write, baud=9600),
                                 stop)
    try:
        with serial.Serial(path, 115200, timeout=0.2) as port:
            assert talk(port, streamcore.frame(0, b"M110 N0")) == [b"ok"]
            port.write(b"".join(streamcore.frame(n, b"G1 X%d" % n) for n in (1, 2, 3)))
            oks = [talk(port, b"") for _ in range(3)]
            assert oks == [[b"ok"]] * 3
            assert printer.last_line == 3
    finally:
        stop.set()
