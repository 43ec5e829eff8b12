"""The printer's config sections: ``[printer]`` (the port, the link's window and timeouts),
``[printer.virtual]`` (the stand-in printer on a pty), ``[printer.pause.<reason>]`` (what a pause
does with the heaters) and ``[safety]`` (limits the host enforces whatever the firmware does).

pydantic only, so loading a config pulls in no serial or G-code code.  Every key is documented in
``config/node.example.toml``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from node.section import Section

Heater = Literal["keep", "off"]


class PausePolicy(Section):
    """``[printer.pause.<reason>]``: the heaters while paused for that reason, and when to suspend."""

    hotend: Heater = Field("keep", description="the hotend's target while paused: kept, or off")
    bed: Heater = Field("keep", description="the bed's target while paused: kept (part stays stuck), or off")
    hotend_off_after_s: float = Field(0.0, ge=0, description="a kept hotend goes off after this long paused "
                                                             "(node seconds; 0 = never)")
    suspend_after_s: float | None = Field(None, ge=0, description="cut the printer's power and suspend the "
                                                                  "job after this long paused (0 = at once; "
                                                                  "unset = never)")


class PausePolicies(Section):
    """One policy per pause reason (node.jobs.PauseReason)."""

    user: PausePolicy = PausePolicy(hotend_off_after_s=1800.0)
    runout: PausePolicy = PausePolicy(hotend_off_after_s=1800.0)
    door: PausePolicy = PausePolicy(hotend_off_after_s=1800.0)
    printer: PausePolicy = PausePolicy(hotend_off_after_s=1800.0)
    energy: PausePolicy = PausePolicy(hotend="off")
    low_battery: PausePolicy = PausePolicy(hotend="off", bed="off", suspend_after_s=0.0)
    #: blind: the battery guard cannot see the battery; most losses are a USB glitch of seconds
    telemetry_lost: PausePolicy = PausePolicy(hotend="off", suspend_after_s=1800.0)

    def for_reason(self, reason: str) -> PausePolicy:
        return getattr(self, str(reason))


class SafetySection(Section):
    """``[safety]``: limits the host enforces whatever the firmware does."""

    max_hotend_c: float = Field(275.0, gt=0, le=500, description="highest hotend temperature a job may set or reach")
    max_bed_c: float = Field(110.0, gt=0, le=200, description="highest bed temperature a job may set or reach")
    overshoot_c: float = Field(15.0, ge=0, le=100, description="reported temperature above max (or target) that trips")
    heating_check_s: float = Field(60.0, gt=0, description="sim seconds at full power that must bring a rise")
    heating_min_rise_c: float = Field(2.0, gt=0, description="rise expected within heating_check_s at full power")
    full_power_fraction: float = Field(0.95, gt=0, le=1, description="PWM fraction counted as full power")
    report_timeout_s: float = Field(15.0, gt=0, description="real seconds without a report while a heater is on")
    confirmations: int = Field(2, ge=1, le=10,
                               description="consecutive over-temperature reports needed (a garbled digit is not a fire)")
    forbidden_commands: list[str] = Field(
        default_factory=lambda: ["M997", "M500", "M501", "M502", "M504", "M928", "M30", "M112", "M999",
                                 "M0", "M1", "M303"],
        description="commands a job may never contain")
    extra_forbidden_commands: list[str] = Field(default_factory=list, description="added to forbidden_commands")
    allowed_commands: list[str] = Field(default_factory=list, description="exceptions removed from the forbidden list")
    relay_off_command: str = Field("", description="shell command run after M112 to cut printer power ('' = none)")


class VirtualPrinterSection(Section):
    """The Marlin-like printer on a pseudo-terminal that stands in for hardware."""

    ambient_c: float = Field(22.0, ge=-30, le=60)
    planner_depth: int | None = Field(None, ge=1, le=64, description="default: the profile's")
    autostart: bool = Field(True, description="the daemon starts it when printer.port = 'virtual'")
    baud: int = Field(0, ge=0, le=4_000_000, description="emulate this link rate, host to printer (0: as fast "
                                                         "as the pty; bench/footprint.py uses 250000)")


class PrinterSection(Section):
    """``[printer]``: the port, the link's window and timeouts, checkpoints and resume."""

    port: str = Field("virtual", description="'virtual', 'auto' (first /dev/serial/by-id), or a device path")
    baud: int = Field(115200, gt=0)
    profile: str = Field("ender3", description="built-in profile name or path to a profile TOML")
    connect_timeout_s: float = Field(20.0, gt=0)
    boot_wait_s: float = Field(2.0, ge=0, le=30, description="after opening: wait this long for a reset-on-open banner")
    reply_timeout_s: float = Field(30.0, gt=0, description="longest time without an acknowledged line while streaming "
                                   "(temperature reports do not count); past it: fail safe, heaters off")
    progress_interval_s: float = Field(2.0, gt=0, description="real seconds between progress logs")
    max_commands: int = Field(4, ge=1, le=64, description="lines in flight: the firmware's command queue (BUFSIZE)")
    rx_buffer_bytes: int = Field(128, ge=32, le=65536, description="bytes in flight: the firmware's RX buffer")
    coalesce_s: float = Field(0.0, ge=0, le=0.05,
                              description="sleep before each read while 2+ lines are in flight, so replies are read in batches")
    ping_pong: bool = Field(False, description="one line in flight (for firmware that mishandles a window)")
    resend_has_ok: bool = Field(True, description="the firmware follows 'Resend:' with 'ok' (Marlin does)")
    tickle_s: float = Field(3.0, gt=0, description="most time without an acknowledged line before the oldest in flight is "
                                     "probed (sooner at a fast firmware: ~20 typical gaps)")
    max_probes: int = Field(5, ge=1, le=100, description="probes answered by nothing at all before the job fails safe")
    long_timeout_s: float = Field(900.0, gt=0, description="bound for G28/G29/M400/M303/G4 (and heating without a "
                                          "thermal model); M109/M190 use the profile's model")
    max_consecutive_resends: int = Field(25, ge=1, description="refusals of one line before the job fails")
    poll_interval_s: float = Field(2.0, gt=0, description="M105 polling when the firmware has no autoreport")
    checkpoint_interval_s: float = Field(5.0, gt=0, description="real seconds between checkpoints while printing")
    resume_rewind_moves: int = Field(24, ge=0, le=1000,
                                     description="acknowledged lines resent on resume: planner depth + queue + margin")
    auto_resume: bool = Field(False, description="resume an interrupted job on its own once the printer is back")
    auto_resume_suspended: bool = Field(True, description="resume a job the node suspended (energy, battery) on "
                                                          "its own once every start gate allows it")
    pause: PausePolicies = PausePolicies()
    virtual: VirtualPrinterSection = VirtualPrinterSection()
