"""Config sections of the Pi's operations: ``[watchdog]``, ``[time]``, ``[storage]`` (SD-card care).

pydantic only, so loading a config costs nothing more.  Every key is documented in
``config/node.example.toml``; ``[gpio]`` is in :mod:`node.hw.config`.
"""
from __future__ import annotations

from pydantic import Field

from node.section import Section


class WatchdogSection(Section):
    probe_interval_s: float = Field(5.0, gt=0, le=60, description="real seconds between loop-lag probes")
    max_loop_lag_s: float = Field(5.0, gt=0, description="a probe waking later than this marks the loop unhealthy")
    store_timeout_s: float = Field(10.0, gt=0, description="the store thread must answer within this")
    debug_block_loop_after_s: float | None = Field(
        None, ge=0, description="TEST ONLY: block the event loop once, this many real seconds after start")
    debug_block_loop_for_s: float = Field(0.0, ge=0, le=600, description="TEST ONLY: how long that block lasts")








class TimeSection(Section):
    require_sync: bool | None = Field(None, description="planner refuses to plan until the clock is trusted; default: on a real clock only")
    ntp: bool = Field(True, description="trust systemd-timesyncd / chrony (NTP) when they report sync")
    hub_max_age_s: float = Field(6 * 3600, gt=0, description="hub time is trusted for this long after the last message")
    hub_max_skew_s: float = Field(5.0, gt=0, description="larger differences to the hub's time are reported as offset")
    rtc: bool = Field(True, description="trust a battery-backed RTC that set the clock at boot (Pi 5 with a cell)")
    gpsd: str | None = Field(None, description="host:port of gpsd (e.g. '127.0.0.1:2947' in an RV); None = no GPS")
    longitude_deg: float | None = Field(None, ge=-180, le=180, description="site longitude for the solar-noon check")
    max_solar_noon_error_s: float = Field(1800.0, gt=0, description="PV solar noon further off than this flags the clock")
    check_interval_s: float = Field(60.0, gt=0, description="real seconds between source checks")
    jump_threshold_s: float = Field(2.0, gt=0, description="wall-clock steps larger than this are logged as jumps")


class StorageSection(Section):
    checkpoint_interval_s: float = Field(300.0, gt=0, description="real seconds between PRAGMA wal_checkpoint(PASSIVE)")
    wal_autocheckpoint_pages: int = Field(1000, ge=0, description="SQLite's own checkpoint trigger (pages; 0 = off)")
    journal_size_limit_mb: float = Field(4.0, ge=0, description="WAL file is truncated to this after a checkpoint")
    max_db_mb: float | None = Field(None, gt=0, description="hard cap on the database size (PRAGMA max_page_count); None = the disk")
    min_free_mb: float = Field(200.0, ge=0, description="warn (status, doctor) below this free space in state_dir")


