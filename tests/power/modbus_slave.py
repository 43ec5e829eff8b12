"""A Modbus RTU slave on the master side of a pseudo-terminal, for the source tests.

Serves function 0x03 (holding) or 0x04 (input) register reads from a dict, with
the CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF, low byte first) of the
Modbus over Serial Line specification V1.02.  Unmapped registers get exception
02 (illegal data address); other units get silence, like a real bus.
"""
from __future__ import annotations

import os
import select
import struct
import threading


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(frame: bytes) -> bytes:
    return frame + struct.pack("<H", crc16(frame))


class ModbusSlave:
    def __init__(self, master_fd: int, unit: int, function_code: int, registers: dict[int, int]) -> None:
        self.fd = master_fd
        self.unit = unit
        self.function_code = function_code
        self.registers = registers
        self.corrupt_replies = False
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> ModbusSlave:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _serve(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                buffer = b""  # a silence of > 3.5 characters ends a frame
                continue
            try:
                buffer += os.read(self.fd, 256)
            except OSError:
                return
            while len(buffer) >= 8:
                frame, buffer = buffer[:8], buffer[8:]
                reply = self.handle(frame)
                if reply is not None:
                    os.write(self.fd, reply)

    def handle(self, frame: bytes) -> bytes | None:
        if crc16(frame[:-2]) != struct.unpack("<H", frame[-2:])[0]:
            return None
        unit, function, start, count = struct.unpack(">BBHH", frame[:6])
        if unit != self.unit:
            return None
        self.requests += 1
        if function != self.function_code:
            return with_crc(bytes([unit, function | 0x80, 0x01]))
        addresses = range(start, start + count)
        if not all(a in self.registers for a in addresses):
            return with_crc(bytes([unit, function | 0x80, 0x02]))
        data = b"".join(struct.pack(">H", self.registers[a] & 0xFFFF) for a in addresses)
        reply = with_crc(bytes([unit, function, len(data)]) + data)
        if self.corrupt_replies:
            reply = reply[:-1] + bytes([reply[-1] ^ 0xFF])
        return reply
