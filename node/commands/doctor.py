"""``printnode doctor``: check what a field install needs, and say how to fix what is wrong.

Checks: the config, the state directory and its free space, the printer's
serial port (exists, this user may open it), the daemon (answers on its
socket; its printer and watchdog), GPIO and I2C device access, the MQTT
broker (TCP reachability), the clock (NTP / RTC), the web page's credentials, and the systemd unit.
Each result is ok / warn / fail with a one-line fix; exit status 1 if any
check failed.  ``--json`` prints the list for scripts.
"""
from __future__ import annotations

import argparse
import glob
import grp
import os
import shutil
import socket
import stat
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from node.commands.common import add_config_arguments, config_from_args, print_json

Level = Literal["ok", "warn", "fail", "info"]


@dataclass
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="check serial, GPIO, I2C, broker, clock, disk; say what to fix")
    add_config_arguments(parser)
    parser.add_argument("--broker", default=None, metavar="HOST:PORT", help="MQTT broker to test (default: from config)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    checks = run_checks(config, broker=args.broker)
    if args.json:
        print_json([asdict(c) for c in checks])
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "info": "--  "}
        for c in checks:
            print(f"{marks[c.level]} {c.name:<10} {c.detail}")
            if c.fix and c.level in ("warn", "fail"):
                print(f"           fix: {c.fix}")
        failed = sum(c.level == "fail" for c in checks)
        print(f"\n{failed} problem(s)" if failed else "\nall checks passed")
    return 1 if any(c.level == "fail" for c in checks) else 0


def run_checks(config: Any, broker: str | None = None) -> list[Check]:
    checks = [check_state_dir(config.state_dir, config.storage.min_free_mb)]
    daemon_status = _daemon_status(config)
    checks.append(check_daemon(daemon_status, config.control_socket))
    checks.append(check_serial(config.printer.port, daemon_status))
    checks.append(check_gpio(config.gpio.backend, _gpio_configured(config)))
    checks.append(check_i2c())
    checks.append(check_broker(broker or _configured_broker(config)))
    checks.append(check_clock(daemon_status))
    checks.append(check_web(config.web.enabled, config.web_credentials, daemon_status))
    checks.append(check_unit())
    return checks


# --- the checks -----------------------------------------------------------------------------
def check_state_dir(state_dir: Path, min_free_mb: float) -> Check:
    probe = state_dir if state_dir.exists() else state_dir.parent
    if not probe.exists():
        return Check("storage", "fail", f"{state_dir} does not exist and neither does its parent",
                     f"create it: sudo install -d -o printnode -g printnode {state_dir}")
    if not os.access(probe, os.W_OK):
        return Check("storage", "fail", f"{probe} is not writable by {_user()}",
                     f"sudo chown -R printnode:printnode {state_dir} (and run as the printnode user)")
    free_mb = shutil.disk_usage(probe).free / 2**20
    if free_mb < min_free_mb:
        return Check("storage", "fail", f"{free_mb:.0f} MB free in {probe} (storage.min_free_mb = {min_free_mb:.0f})",
                     "delete old job files (<state_dir>/files), or use a larger card")
    return Check("storage", "ok", f"{state_dir}: writable, {free_mb:.0f} MB free")


def check_serial(port: str, daemon_status: dict[str, Any] | None) -> Check:
    printer = (daemon_status or {}).get("components", {}).get("printer", {})
    running = f"; daemon says: {printer.get('state')} {printer.get('detail', '')}".rstrip() if printer else ""
    if port == "virtual":
        return Check("printer", "info", "printer.port = 'virtual' (the simulated printer)" + running)
    if port == "auto":
        found = sorted(glob.glob("/dev/serial/by-id/*"))
        if not found:
            return Check("printer", "fail", "printer.port = 'auto' but /dev/serial/by-id is empty",
                         "plug the printer in and switch it on (a relay-switched printer appears when a job starts); "
                         "check `dmesg | tail` for a USB serial device")
        port = found[0]
    path = Path(port)
    if not path.exists():
        return Check("printer", "fail", f"{port} does not exist" + running,
                     "check the cable and printer power; use the /dev/serial/by-id/... name, not /dev/ttyUSB0")
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return Check("printer", "fail", f"{port}: {exc}")
    if not stat.S_ISCHR(mode):
        return Check("printer", "fail", f"{port} is not a character device", "point printer.port at the serial device")
    if not os.access(path, os.R_OK | os.W_OK):
        group = _group_of(path)
        return Check("printer", "fail", f"{_user()} may not open {port} (group {group})",
                     f"sudo usermod -aG {group} {_user()}, then log in again (the service user gets it from the unit)")
    return Check("printer", "ok", f"{port} ({os.path.realpath(port)}) can be opened" + running)


def check_daemon(status: dict[str, Any] | None, socket_path: Path) -> Check:
    if status is None:
        return Check("daemon", "warn", f"no daemon answers on {socket_path}",
                     "sudo systemctl start printnode; journalctl -u printnode -e says why it stopped")
    watchdog = status.get("components", {}).get("watchdog", {})
    detail = f"printnode {status.get('version')} running as node {status.get('node_id')}"
    if watchdog and not watchdog.get("healthy", True):
        return Check("daemon", "fail", f"{detail}; unhealthy: {watchdog.get('reason')}",
                     "journalctl -u printnode -e; systemd will restart it when the watchdog fires")
    return Check("daemon", "ok", detail)


def check_gpio(backend: str, configured: bool) -> Check:
    if backend == "simulated":
        level: Level = "warn" if configured and _is_pi() else "info"
        return Check("gpio", level, "gpio.backend = 'simulated': relay, LED and buttons are not driven",
                     "set gpio.backend = 'rpi' on a Raspberry Pi")
    import importlib.util

    if importlib.util.find_spec("RPi") is None:
        return Check("gpio", "fail", "the RPi.GPIO API is not installed",
                     "pip install 'printnode[pi]' (Pi 1-4) or 'printnode[pi5]' (rpi-lgpio, Pi 5) in the venv")
    devices = [p for p in ("/dev/gpiomem", *sorted(glob.glob("/dev/gpiochip*"))) if os.path.exists(p)]
    if not devices:
        return Check("gpio", "fail", "no /dev/gpiomem or /dev/gpiochip*: not a Raspberry Pi?")
    denied = [p for p in devices if not os.access(p, os.R_OK | os.W_OK)]
    if len(denied) == len(devices):
        return Check("gpio", "fail", f"{_user()} may not open {', '.join(devices)}",
                     f"sudo usermod -aG gpio {_user()}")
    return Check("gpio", "ok", f"{', '.join(d for d in devices if d not in denied)} accessible")


def check_i2c() -> Check:
    buses = sorted(glob.glob("/dev/i2c-*"))
    if not buses:
        return Check("i2c", "info", "no I2C bus (needed only for an I2C power monitor or RTC)",
                     "sudo raspi-config nonint do_i2c 0")
    denied = [b for b in buses if not os.access(b, os.R_OK | os.W_OK)]
    if denied:
        return Check("i2c", "warn", f"{_user()} may not open {', '.join(denied)}", f"sudo usermod -aG i2c {_user()}")
    return Check("i2c", "ok", f"{', '.join(buses)} accessible")


def check_broker(address: str | None, timeout_s: float = 3.0) -> Check:
    if not address:
        return Check("broker", "info", "no broker configured: the node runs offline")
    host, _, port_text = address.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        return Check("broker", "fail", f"{address!r} is not host:port")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        return Check("broker", "fail", f"cannot reach {host}:{port}: {exc}",
                     "check the network (ping the host), the broker's listener, and a firewall on port "
                     f"{port}; the node keeps printing offline meanwhile")
    return Check("broker", "ok", f"{host}:{port} accepts TCP connections")


def check_clock(daemon_status: dict[str, Any] | None) -> Check:
    from node.field.timesync import ntp_synchronized, rtc_set_clock_at_boot

    timesync = (daemon_status or {}).get("components", {}).get("timesync")
    if timesync is not None:
        level: Level = "ok" if timesync.get("clock_synchronized") else "fail"
        return Check("clock", level, f"daemon: {timesync.get('reason')} (source {timesync.get('source')})",
                     "enable NTP (sudo timedatectl set-ntp true) and give the Pi network, or configure the hub, "
                     "an RTC cell (Pi 5) or gpsd; the planner will not plan until then")
    synced, how = ntp_synchronized()
    if synced:
        return Check("clock", "ok", f"NTP synchronised ({how})")
    if rtc_set_clock_at_boot():
        return Check("clock", "ok", "set from the RTC at boot")
    return Check("clock", "warn", f"not synchronised ({how}: {'unknown' if synced is None else 'no'})",
                 "sudo timedatectl set-ntp true; without network the hub's messages or an RTC/GPS must vouch for it")


def check_web(enabled: bool, credentials_path: Path, daemon_status: dict[str, Any] | None) -> Check:
    """The page's credentials (API key, password) exist, are private, and the daemon serves the page."""
    if not enabled:
        return Check("web", "info", "the web page is off ([web] enabled = false)")
    from node.web.credentials import problems

    if not credentials_path.exists():  # the first start makes them (and logs the password once): a warning
        return Check("web", "warn", f"no API key or page password yet ({credentials_path})",
                     "sudo -u printnode printnode web init (prints the key and a password)")
    found = problems(credentials_path)
    if found:
        return Check("web", "fail", "; ".join(found), "sudo -u printnode printnode web init (then `web password`)")
    web = (daemon_status or {}).get("components", {}).get("web", {})
    if web.get("problem"):
        return Check("web", "fail", web["problem"], "set a free [web] port, or bind to an address this machine has")
    where = f" at {web['url']}" if web.get("url") else ""
    return Check("web", "ok", f"API key and page password set ({credentials_path}){where}")


def check_unit() -> Check:
    systemctl = shutil.which("systemctl")
    if systemctl is None or not os.path.isdir("/run/systemd/system"):
        return Check("service", "info", "not running under systemd here")
    result = subprocess.run([systemctl, "is-active", "printnode"], capture_output=True, text=True, timeout=10)
    state = result.stdout.strip() or result.stderr.strip()
    if state == "active":
        return Check("service", "ok", "printnode.service is active")
    return Check("service", "warn", f"printnode.service is {state}",
                 "sudo systemctl enable --now printnode; scripts/install-pi.sh installs it")


# --- helpers --------------------------------------------------------------------------------
def _daemon_status(config: Any) -> dict[str, Any] | None:
    from node.controlclient import ControlClient

    try:
        return ControlClient(config.control_socket, timeout_s=5).request({"cmd": "status"})
    except Exception:
        return None


def _configured_broker(config: Any) -> str | None:
    """host:port from a [sync] section if this version has one (issue 7 adds it)."""
    sync = getattr(config, "sync", None)
    if sync is None:
        return None
    host = getattr(sync, "broker_host", None) or getattr(sync, "host", None)
    port = getattr(sync, "broker_port", None) or getattr(sync, "port", None) or 1883
    broker = getattr(sync, "broker", None)
    if isinstance(broker, str) and broker:
        return broker if ":" in broker else f"{broker}:{port}"
    return f"{host}:{port}" if host else None


def _gpio_configured(config: Any) -> bool:
    g = config.gpio
    return any((g.relay, g.led, g.plate_button, g.runout_sensor, g.door_sensor))


def _is_pi() -> bool:
    try:
        return "raspberry pi" in Path("/proc/device-tree/model").read_text().lower()
    except OSError:
        return False


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _group_of(path: Path) -> str:
    try:
        return grp.getgrgid(path.stat().st_gid).gr_name
    except (KeyError, OSError):
        return "dialout"
