"""systemd's notify protocol (READY, STOPPING, WATCHDOG, STATUS) without a dependency.

A datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace); a no-op when the variable is unset (not under systemd).
Reference: sd_notify(3).
"""
from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True
