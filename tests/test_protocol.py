import pytest

from node.printer.protocol import Kind, capabilities, classify


@pytest.mark.parametrize("line, kind", [
    (b"ok", Kind.OK), (b"ok N12 P15 B3", Kind.OK), (b"Resend: 12", Kind.RESEND), (b"rs N12", Kind.RESEND),
    (b"Error:checksum mismatch, Last Line: 5", Kind.ERROR),
    (b"Error:Printer halted. kill() called!", Kind.FATAL), (b"Error:Thermal Runaway, system stopped!", Kind.FATAL),
    (b"Error:MINTEMP triggered, system stopped!", Kind.FATAL), (b"!! emergency", Kind.FATAL),
    (b"echo:busy: processing", Kind.BUSY), (b"wait", Kind.WAIT), (b"start", Kind.START),
    (b"//action:pause", Kind.ACTION), (b"Cap:AUTOREPORT_TEMP:1", Kind.CAPABILITY),
    (b" T:210.00 /210.00 B:60.00 /60.00 @:64 B@:30", Kind.TEMPERATURE),
    (b"\xff\xfe garbage", Kind.OTHER), (b"", Kind.OTHER),
])
def test_classify(line: bytes, kind: Kind) -> None:
    assert classify(line).kind == kind


def test_temperatures_with_pwm_and_ok_report() -> None:
    reply = classify(b"ok T:200.5 /210.0 B:59.9 /60.0 @:127 B@:0")
    t = reply.temperatures
    assert t is not None and (t.hotend_c, t.hotend_target_c, t.bed_c, t.bed_target_c) == (200.5, 210.0, 59.9, 60.0)
    assert t.hotend_pwm == 1.0 and t.bed_pwm == 0.0


def test_resend_number_and_action_name() -> None:
    assert classify(b"Resend: 42").line_number == 42
    assert classify(b"//action:cancel").action == "cancel"


def test_capabilities() -> None:
    assert capabilities(["Cap:AUTOREPORT_TEMP:1", "Cap:EEPROM:0", "FIRMWARE_NAME:x"]) == {
        "AUTOREPORT_TEMP": True, "EEPROM": False}
