"""Time without a clock chip: which source vouches for the wall clock, and is it plausible.

A Pi has no battery-backed clock (before the Pi 5 with a cell): after a power
cut it boots on the time saved at the last shutdown, possibly days stale.  The
planner turns the clock into sun positions, so a wrong clock plans prints for
the night.  Sources, in order of trust:

1. NTP: systemd-timesyncd's flag file ``/run/systemd/timesync/synchronized``
   (systemd >= 239), else ``timedatectl show -p NTPSynchronized``, else the
   kernel's ``adjtimex`` state (``STA_UNSYNC`` clear; adjtimex(2)).  Under the
   unit's ProtectClock= the syscall may be filtered: then this source is
   simply unknown.
2. The hub: each verified hub message's time (the ``hub_time_observed`` event that sync
   sends) goes to :meth:`TimeSync.record_hub_time`; trusted for ``hub_max_age_s``.
3. An RTC that set the clock at boot (``/sys/class/rtc/rtc0/hctosys``), or
   gpsd (``?WATCH`` TPV reports, https://gpsd.gitlab.io/gpsd/gpsd_json.html).

Plausibility: a day of PV power peaks at solar noon.  :func:`estimate_clock_offset_s`
compares the PV curve's centre with the solar noon computed for the site's
longitude (equation of time after Spencer 1971), which catches a clock that
is hours off even when no source is reachable.

The planner reads :attr:`TimeSync.clock_synchronized` (and ``reason``) or
listens to ``clock_sync`` events, and refuses to plan while it is false;
``printnode status`` shows the same.  In a simulation (scaled or shifted
clock) the sim clock is the truth and needs no source.
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import math
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.events import ClockSync, HubTimeObserved, TelemetrySample
from node.field.config import TimeSection
from node.node import Component, Node, wait_until_set

log = logging.getLogger(__name__)

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
RTC_SYSFS = Path("/sys/class/rtc/rtc0")
TIME_ERROR = 5        # adjtimex(2) return value: clock not synchronized
STA_UNSYNC = 0x0040   # adjtimex(2) status bit


# --- pure: the sun ---------------------------------------------------------------------------
def equation_of_time_min(day_of_year: int) -> float:
    """Apparent minus mean solar time, minutes (Spencer 1971, as in Iqbal 1983 eq. 1.4.1)."""
    b = 2 * math.pi * (day_of_year - 1) / 365
    return 229.18 * (0.000075 + 0.001868 * math.cos(b) - 0.032077 * math.sin(b)
                     - 0.014615 * math.cos(2 * b) - 0.040849 * math.sin(2 * b))


def solar_noon_utc_s(t_s: float, longitude_deg: float) -> float:
    """POSIX time of the solar noon nearest ``t_s`` at ``longitude_deg`` (east positive)."""
    day_start = math.floor(t_s / 86400) * 86400
    doy = time.gmtime(day_start).tm_yday
    noon_h = 12.0 - longitude_deg / 15.0 - equation_of_time_min(doy) / 60.0
    noon = day_start + noon_h * 3600
    # the nearest occurrence (a far-east or far-west site's noon may fall on the neighbouring UTC day)
    return noon + 86400 * round((t_s - noon) / 86400)


def last_daylight_run(samples: Sequence[tuple[float, float]], dark_fraction: float = 0.1) -> list[tuple[float, float]] | None:
    """The last run of samples that starts and ends in the dark (below ``dark_fraction`` of its peak)."""
    ordered = sorted(samples)
    if len(ordered) < 10:
        return None
    peak = max(pv for _, pv in ordered)
    if peak <= 0:
        return None
    threshold = dark_fraction * peak
    end = None
    for i in range(len(ordered) - 1, -1, -1):
        if ordered[i][1] <= threshold and end is None and any(pv > threshold for _, pv in ordered[:i]):
            end = i
        elif end is not None and ordered[i][1] <= threshold and any(pv > threshold for _, pv in ordered[i:end]):
            run = ordered[i:end + 1]
            return run if len(run) >= 10 else None
    return None


def pv_solar_noon_s(samples: Sequence[tuple[float, float]]) -> float | None:
    """Centre of a day's PV curve (power-weighted mean time) over one full daylight run, or None."""
    run = last_daylight_run(samples)
    if run is None:
        return None
    weight = sum(pv for _, pv in run)
    return sum(t * pv for t, pv in run) / weight if weight > 0 else None


def estimate_clock_offset_s(samples: Sequence[tuple[float, float]], longitude_deg: float) -> float | None:
    """How far the clock that stamped ``samples`` (t_s, pv_w) is ahead of true time, from solar noon.

    Positive: the clock is ahead.  Accuracy is minutes on a clear day with an
    equator-facing array; clouds and an east/west tilt shift the centre, so use
    it only as a plausibility check (``time.max_solar_noon_error_s``, 30 min).
    """
    measured = pv_solar_noon_s(samples)
    if measured is None:
        return None
    return measured - solar_noon_utc_s(measured, longitude_deg)


# --- sources -------------------------------------------------------------------------------
class _Timex(ctypes.Structure):
    # struct timex (adjtimex(2)); only the fields before ``time`` are read, the tail is padding
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("_rest", ctypes.c_byte * 256)]


def kernel_ntp_synchronized() -> bool | None:
    """The kernel's NTP state (read-only adjtimex); None when the call is not allowed or not Linux."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR and not timex.status & STA_UNSYNC


def ntp_synchronized() -> tuple[bool | None, str]:
    """(synchronized or None if unknown, how we know)."""
    if TIMESYNCD_FLAG.exists():
        return True, "systemd-timesyncd"
    timedatectl = shutil.which("timedatectl")
    if timedatectl:
        try:
            out = subprocess.run([timedatectl, "show", "-p", "NTPSynchronized", "--value"],
                                 capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip() in ("yes", "no"):
                return out.stdout.strip() == "yes", "timedatectl"
        except (OSError, subprocess.TimeoutExpired):
            pass
    kernel = kernel_ntp_synchronized()
    return kernel, "adjtimex"


def rtc_set_clock_at_boot(sysfs: Path = RTC_SYSFS, max_skew_s: float = 5.0) -> bool:
    """True if a battery-backed RTC set the system clock at boot and still agrees with it."""
    try:
        if (sysfs / "hctosys").read_text().strip() != "1":
            return False
        rtc_s = int((sysfs / "since_epoch").read_text().strip())
    except (OSError, ValueError):
        return False
    return abs(rtc_s - time.time()) <= max_skew_s


async def gpsd_time_s(address: str, timeout_s: float = 5.0) -> float | None:
    """One fix's UTC time from gpsd (TPV with mode >= 2), or None."""
    from datetime import datetime

    host, _, port = address.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host or "127.0.0.1", int(port)), timeout_s)
    except (OSError, ValueError, TimeoutError):
        return None
    try:
        writer.write(b'?WATCH={"enable":true,"json":true}\n')
        await writer.drain()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(reader.readline(), max(0.1, deadline - time.monotonic()))
            if not line:
                return None
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if report.get("class") == "TPV" and report.get("mode", 0) >= 2 and report.get("time"):
                return datetime.fromisoformat(report["time"].replace("Z", "+00:00")).timestamp()
        return None
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()


@dataclass(frozen=True)
class SyncState:
    synchronized: bool
    source: str
    reason: str
    offset_s: float | None = None


class TimeSync(Component):
    name = "timesync"
    section = "time"

    def __init__(self, node: Node, config: TimeSection, simulated_clock: bool) -> None:
        super().__init__(node, config)
        self.config: TimeSection = config
        self.simulated_clock = simulated_clock
        self.required = (not simulated_clock) if config.require_sync is None else config.require_sync
        self.state = SyncState(False, "unchecked", "not checked yet")
        self.solar_offset_s: float | None = None
        self.last_jump_s: float | None = None
        self._hub: tuple[float, float] | None = None  # (monotonic when heard, hub - local offset)
        self._pv: list[tuple[float, float]] = []
        self._wall_minus_mono = time.time() - time.monotonic()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- the seams ---------------------------------------------------------------------------
    @property
    def clock_synchronized(self) -> bool:
        """What the planner checks: may the wall clock be turned into sun positions?"""
        return self.state.synchronized or not self.required

    @property
    def reason(self) -> str:
        return self.state.reason

    def record_hub_time(self, hub_t_s: float, node_t_s: float | None = None) -> None:
        """The time stamped on a hub message, and the node's clock when it arrived (default: now)."""
        arrived_t_s = self.node.clock.time() if node_t_s is None else node_t_s
        self._hub = (time.monotonic(), hub_t_s - arrived_t_s)
        self._wake.set()

    def _on_hub_time(self, event: HubTimeObserved) -> None:
        self.record_hub_time(event.hub_time_s, event.node_t_s)

    # --- lifetime ----------------------------------------------------------------------------
    async def start(self) -> None:
        self.node.register_event_handler("telemetry_sample", self._on_telemetry)
        self.node.register_event_handler("hub_time_observed", self._on_hub_time)
        await self.check()
        self._task = self.node.spawn(self._loop(), "timesync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {"clock_synchronized": self.clock_synchronized, "required": self.required,
                "source": self.state.source, "reason": self.state.reason, "offset_s": self.state.offset_s,
                "solar_noon_offset_s": self.solar_offset_s, "last_jump_s": self.last_jump_s}

    async def _loop(self) -> None:
        while True:
            await wait_until_set(self._wake, self.config.check_interval_s)
            self._wake.clear()
            try:
                await self.check()
            except Exception:
                log.exception("time sources check failed")

    async def _on_telemetry(self, sample: TelemetrySample) -> None:
        if sample.pv_w is None or sample.stale:
            return
        if self._pv and sample.t_s - self._pv[-1][0] < 60:  # one point a minute is plenty
            return
        self._pv.append((sample.t_s, sample.pv_w))
        cutoff = sample.t_s - 36 * 3600
        if self._pv[0][0] < cutoff:
            self._pv = [p for p in self._pv if p[0] >= cutoff]

    # --- deciding ----------------------------------------------------------------------------
    def detect_jump(self) -> float | None:
        """A step of the wall clock against the monotonic one since the last call, if over the threshold."""
        now = time.time() - time.monotonic()
        step = now - self._wall_minus_mono
        self._wall_minus_mono = now
        return step if abs(step) > self.config.jump_threshold_s else None

    async def evaluate_sources(self) -> SyncState:
        if self.simulated_clock:
            return SyncState(True, "simulation", "simulated clock: sim time is the truth")
        if self.config.ntp:
            synced, how = await asyncio.to_thread(ntp_synchronized)
            if synced:
                return SyncState(True, "ntp", f"NTP synchronised ({how})")
        if self._hub is not None:
            heard, offset = self._hub
            age = time.monotonic() - heard
            if age <= self.config.hub_max_age_s:
                if abs(offset) <= self.config.hub_max_skew_s:
                    return SyncState(True, "hub", f"agrees with the hub ({offset:+.1f} s, {age:.0f} s ago)", offset)
                return SyncState(False, "hub", f"clock is {offset:+.0f} s off the hub's time: fix NTP or the hub", offset)
        if self.config.rtc and await asyncio.to_thread(rtc_set_clock_at_boot):
            return SyncState(True, "rtc", "set from the battery-backed RTC at boot")
        if self.config.gpsd:
            gps_t = await gpsd_time_s(self.config.gpsd)
            if gps_t is not None:
                offset = time.time() - gps_t
                if abs(offset) <= self.config.hub_max_skew_s:
                    return SyncState(True, "gps", f"agrees with GPS ({offset:+.1f} s)", offset)
                return SyncState(False, "gps", f"clock is {offset:+.0f} s off GPS time", offset)
        return SyncState(False, "none", "no time source vouches for the clock (no NTP, hub, RTC or GPS): "
                                        "the planner will not plan")

    async def check(self) -> SyncState:
        jump = self.detect_jump()
        if jump is not None:
            self.last_jump_s = jump
            log.warning("wall clock stepped by %+.1f s", jump)
        state = await self.evaluate_sources()
        if self.config.longitude_deg is not None and not self.simulated_clock:
            self.solar_offset_s = estimate_clock_offset_s(self._pv, self.config.longitude_deg)
            if self.solar_offset_s is not None and abs(self.solar_offset_s) > self.config.max_solar_noon_error_s:
                note = f"PV solar noon says the clock is {self.solar_offset_s / 60:+.0f} min off"
                state = SyncState(False, state.source, f"{note} ({state.reason})", self.solar_offset_s)
        changed = (state.synchronized, state.source) != (self.state.synchronized, self.state.source)
        self.state = state
        if changed or jump is not None:
            log.info("clock %s: %s", "trusted" if state.synchronized else "NOT trusted", state.reason)
            await self.node.send_event("clock_sync", ClockSync(
                t_s=self.node.clock.time(), synchronized=self.clock_synchronized, source=state.source,
                reason=state.reason, offset_s=state.offset_s, jump_s=jump))
        return state



