"""OctoPrint's Virtual Printer on a pty: the independent judge of the print path (run in OctoPrint's venv).

``python octoprint_bridge.py SETTINGS_JSON PORT_FILE COMMAND_LOG``

OctoPrint's bundled ``virtual_printer`` plugin is a Marlin emulator written by other people, with its
own error injection (``simulated_errors``, ``resend_ratio``, ``busy``, small buffers, ``wait``, the boot
banner on reset).  It is a serial-like object (``write()`` takes what fits in its receive buffer,
``readline()`` gives its replies), so this bridge puts it on a real pseudo-terminal: bytes from the host
are handed to ``write()`` a line at a time until every one is taken (as a UART keeps arriving; the
emulator takes one line from each piece it is given), replies are written back.

What it accepted is recorded at the one place every command passes once it has been taken (after the
line-number, checksum and simulated-error checks): the emulator's own command matcher.  Each such
command goes to COMMAND_LOG, one a line, so a test can compare it with the file.

With ``"resetOnConnect": true`` among the settings the emulator reboots (prints its banner again) when
a host opens the port, as a board wired for DTR reset does.  The bridge exits when stdin closes (the test
ends) or on SIGTERM.  Standard library and OctoPrint only: this runs outside the project's venv.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
import tty

from octoprint.plugins import virtual_printer as plugin_package
from octoprint.plugins.virtual_printer import virtual
from serial import SerialTimeoutException


class Settings:
    """The plugin settings API the emulator reads, over the plugin's defaults and the test's overrides."""

    def __init__(self, overrides: dict, folder: str) -> None:
        self.values = plugin_package.VirtualPrinterPlugin().get_settings_defaults()
        self.values.update(overrides)
        self.folder = folder

    def get(self, path: list, merged: bool = False) -> object:
        value: object = self.values
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def get_int(self, path: list) -> int:
        return int(self.get(path))

    def get_float(self, path: list) -> float:
        return float(self.get(path))

    def get_boolean(self, path: list) -> bool:
        return bool(self.get(path))

    def global_get_basefolder(self, name: str) -> str:
        path = os.path.join(self.folder, name)
        os.makedirs(path, exist_ok=True)
        return path


class NoPlugins:
    """The emulator asks the plugin manager for custom-action hooks: there are none here."""

    def get_hooks(self, name: str) -> dict:
        return {}


class RecordingMatcher:
    """Stands in for the emulator's command regex: notes each command it is asked to match."""

    def __init__(self, pattern: re.Pattern, log) -> None:
        self.pattern = pattern
        self.log = log
        self.lock = threading.Lock()

    def match(self, data: str):
        with self.lock:
            self.log.write(data.strip() + "\n")
            self.log.flush()
        return self.pattern.match(data)


def holders_of(path: str) -> int:
    """How many other processes hold ``path`` open (how a pty learns that a host opened it).

    The twin of node.printer.virtual._holders_of: this script runs in OctoPrint's own venv, where
    the node package (and its pydantic) cannot be imported."""
    me, count = str(os.getpid()), 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                    count += 1
                    break
            except OSError:
                continue
    return count


def main() -> int:
    overrides, port_file, command_log = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    reset_on_connect = bool(overrides.pop("resetOnConnect", False))
    folder = tempfile.mkdtemp(prefix="octoprint-vp-")
    virtual.plugin_manager = NoPlugins  # the emulator calls plugin_manager().get_hooks(...)
    log = open(command_log, "w", buffering=1)  # noqa: SIM115 (open for the life of the process)
    virtual.VirtualPrinter.command_regex = RecordingMatcher(virtual.VirtualPrinter.command_regex, log)
    printer = virtual.VirtualPrinter(Settings(overrides, folder), None, folder, read_timeout=0.1,
                                     write_timeout=3600.0)
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    path = os.ttyname(slave)
    stop = threading.Event()

    def host_to_printer() -> None:
        pending = b""
        while not stop.is_set():
            try:
                pending += os.read(master, 4096)
            except OSError:
                time.sleep(0.01)
                continue
            # one line per write(), as OctoPrint's own serial layer calls it: the emulator takes one
            # line from each piece it receives and keeps the rest until more bytes come
            *lines, pending = pending.split(b"\n")
            for line in lines:
                data = line + b"\n"
                while data and not stop.is_set():
                    # no more than fits: write() waits for room for the whole piece it is given
                    room = printer.incoming.maxsize - printer.incoming.qsize()
                    if room <= 0:
                        time.sleep(0.001)  # its receive buffer is full: wait for it to take a line
                        continue
                    try:
                        taken = printer.write(data[:room])
                    except SerialTimeoutException:
                        continue
                    data = data[taken:]

    def printer_to_host() -> None:
        while not stop.is_set():
            line = printer.readline()
            if line:
                os.write(master, line if line.endswith(b"\n") else line + b"\n")

    def dtr_watch() -> None:
        holders = 0
        while not stop.is_set():
            now = holders_of(path)
            if now > holders:
                printer._reset()
            holders = now
            time.sleep(0.02)

    workers = [host_to_printer, printer_to_host] + ([dtr_watch] if reset_on_connect else [])
    for target in workers:
        threading.Thread(target=target, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with open(port_file + ".tmp", "w") as handle:
        handle.write(path)
    os.replace(port_file + ".tmp", port_file)
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    printer.close()
    os._exit(0)  # the emulator's own threads are not daemon threads: they would keep the process alive


if __name__ == "__main__":
    sys.exit(main())
