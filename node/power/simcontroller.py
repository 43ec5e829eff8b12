"""The simulated charge controller: a separate process that speaks VE.Direct on a pseudo-terminal.

It models a PV array (pvlib: sun position and clear-sky irradiance for the configured site,
transposed to the array plane, PVWatts DC power with cell temperature) charging the one
battery plant of :mod:`node.power.plant`, loaded by the node itself and by the printer, on
the node's clock (a :class:`~node.clock.ClockSpec`).  Once a real second, like a Victron
SmartSolar, it writes one VE.Direct text block (with a HEX frame now and then, as real
devices interleave them) to the master side of a pty, so the daemon reads it through the
real parser and pyserial.

pvlib (and pandas) are imported only here: the resident daemon never loads them.

Protocol with the parent (the :mod:`node.power.sources.simulated` source):
- stdin, first line: the :class:`SimControllerArgs` JSON;
- stdout, first line: ``PTY <slave path>`` once the port is ready;
- stdin, later lines: ``printer_w <watts>`` sets the printer's draw; EOF or ``quit`` stops it.
The printer's draw can also be given in a file (``printer_w_file``) holding one number,
for a printer process that is not the parent.

Loads hang on the controller's load output, so ``I`` (battery current) is net of the load
and ``IL`` is the load current, as on a SmartSolar with its load output in use.
"""
from __future__ import annotations

import math
import os
import random
import signal
import sys
import threading
import time
import tty
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from node.clock import Clock, ClockSpec
from node.power.config import ArraySection, BatterySection, SimulatedControllerSection, SiteSection, cloud_clearness
from node.power.plant import BatteryState, PlantStep, step_battery
from node.power.sources.vedirect import encode_block

MAX_SUBSTEP_S = 60.0
BLOCK_PERIOD_S = 1.0  # real seconds between blocks (VE.Direct devices send once a second)
CS_CODES = {"off": 0, "bulk": 3, "absorption": 4, "float": 5}


class SimControllerArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clock: ClockSpec
    site: SiteSection = SiteSection()
    array: ArraySection = ArraySection()
    battery: BatterySection = BatterySection()
    controller: SimulatedControllerSection = SimulatedControllerSection()
    printer_w_file: str | None = None


class PvModel:
    """Available PV power (W, at the MPPT output) and MPP voltage at given UTC times."""

    def __init__(self, site: SiteSection, array: ArraySection, controller: SimulatedControllerSection) -> None:
        import pvlib  # only in this process

        self._pvlib = pvlib
        self.location = pvlib.location.Location(site.latitude, site.longitude, tz="UTC", altitude=site.altitude_m)
        self.array = array
        self.ambient_c = controller.ambient_c
        self.weather_seed = controller.weather_seed
        self.clouds = controller.clouds
        self.zone = ZoneInfo(site.timezone)

    def clearness(self, day_ordinal: int) -> float:
        """Seeded per-day sky clearness (1 = clear); clear sky when no seed is set."""
        if self.weather_seed is None:
            return 1.0
        return random.Random(self.weather_seed * 100_003 + day_ordinal).choice(
            [1.0, 1.0, 0.95, 0.85, 0.7, 0.5, 0.3, 0.15])

    def available(self, times_s: list[float]) -> list[tuple[float, float, float]]:
        """(pv_w, mpp_v, cell_c) for each POSIX time."""
        import pandas as pd

        pvlib = self._pvlib
        times = pd.DatetimeIndex(pd.to_datetime(times_s, unit="s", utc=True))
        position = self.location.get_solarposition(times)
        sky = self.location.get_clearsky(times, model="simplified_solis", solar_position=position)
        poa = pvlib.irradiance.get_total_irradiance(
            self.array.tilt_deg, self.array.azimuth_deg, position["apparent_zenith"], position["azimuth"],
            sky["dni"], sky["ghi"], sky["dhi"])["poa_global"].fillna(0.0).clip(lower=0.0)
        out = []
        for t_s, poa_w_m2 in zip(times_s, poa.to_numpy(), strict=True):
            day = datetime.fromtimestamp(t_s, tz=UTC).toordinal()
            irradiance = float(poa_w_m2) * self.clearness(day)
            if self.clouds:
                local = datetime.fromtimestamp(t_s, tz=self.zone)
                irradiance *= cloud_clearness(local.hour * 60 + local.minute + local.second / 60, self.clouds)
            cell_c = self.ambient_c + irradiance * 0.03  # ~30 K above air at 1000 W/m2 (NOCT-like)
            dc_w = (self.array.peak_w * irradiance / 1000.0
                    * (1.0 + self.array.gamma_pdc_per_c * (cell_c - 25.0)))
            pv_w = max(0.0, dc_w * (1.0 - self.array.losses_pct / 100.0))
            mpp_v = 0.0
            if irradiance > 5.0:
                mpp_v = self.array.mpp_v * (1.0 + 0.05 * math.log(irradiance / 1000.0)) * (
                    1.0 - 0.0035 * (cell_c - 25.0))
            out.append((pv_w, max(0.0, mpp_v), cell_c))
        return out


class SimulatedController:
    """The plant, stepped on sim time, with a SmartSolar's counters."""

    def __init__(self, args: SimControllerArgs) -> None:
        self.args = args
        self.clock = Clock.from_spec(args.clock)
        self.pv = PvModel(args.site, args.array, args.controller)
        self.params = args.battery.plant_params()
        self.state = BatteryState(soc=args.controller.initial_soc)
        self.zone = ZoneInfo(args.site.timezone)
        self.printer_w = 0.0
        self.t_s = self.clock.time()
        self.last_step: PlantStep | None = None
        self.pv_w = 0.0
        self.pv_v = 0.0
        self.yield_total_wh = 0.0
        self.yield_today_wh = 0.0
        self.max_power_today_w = 0.0
        self.yield_yesterday_wh = 0.0
        self.max_power_yesterday_w = 0.0
        self.day = self._local_day(self.t_s)
        self.day_sequence = 0
        self.blocks_sent = 0

    def _local_day(self, t_s: float) -> int:
        return datetime.fromtimestamp(t_s, tz=self.zone).toordinal()

    def load_w(self) -> float:
        return self.args.controller.node_load_w + self.printer_w

    def advance(self) -> None:
        """Step the plant from the last sim time to now, in substeps of at most a minute."""
        now_s = self.clock.time()
        span_s = now_s - self.t_s
        if span_s <= 0:
            if self.last_step is None:
                self._step_to([now_s], 0.0)
            return
        n = max(1, math.ceil(span_s / MAX_SUBSTEP_S))
        dt_s = span_s / n
        self._step_to([self.t_s + dt_s * (i + 1) for i in range(n)], dt_s)

    def _step_to(self, times_s: list[float], dt_s: float) -> None:
        for t_s, (pv_w, mpp_v, _cell_c) in zip(times_s, self.pv.available(times_s), strict=True):
            self.state, step = step_battery(self.params, self.state, pv_w, self.load_w(), max(dt_s, 1e-3))
            self.last_step = step
            self.pv_w, self.pv_v = step.pv_used_w, mpp_v
            day = self._local_day(t_s)
            if day != self.day:
                self.yield_yesterday_wh, self.max_power_yesterday_w = self.yield_today_wh, self.max_power_today_w
                self.yield_today_wh, self.max_power_today_w = 0.0, 0.0
                self.day, self.day_sequence = day, (self.day_sequence + 1) % 365
            harvested_wh = step.pv_used_w * dt_s / 3600.0
            self.yield_today_wh += harvested_wh
            self.yield_total_wh += harvested_wh
            self.max_power_today_w = max(self.max_power_today_w, step.pv_used_w)
            self.t_s = t_s

    def block(self) -> bytes:
        step = self.last_step
        assert step is not None
        night = step.pv_available_w < 1.0
        phase = "off" if night else ("bulk" if step.charge_phase == "discharge" else step.charge_phase)
        mppt = 0 if night else (2 if phase == "bulk" else 1)
        load_a = step.load_served_w / max(step.battery_v, 1.0)
        fields = [
            ("PID", "0xA053"), ("FW", "164"), ("SER#", "HQSIM000001"),
            ("V", str(round(step.battery_v * 1000))), ("I", str(round(step.battery_a * 1000))),
            ("VPV", str(round(self.pv_v * 1000))), ("PPV", str(round(self.pv_w))),
            ("CS", str(CS_CODES[phase])), ("MPPT", str(mppt)), ("OR", "0x00000001" if night else "0x00000000"),
            ("ERR", "0"), ("LOAD", "OFF" if step.empty else "ON"), ("IL", str(round(load_a * 1000))),
            ("H19", str(round(self.yield_total_wh / 10))), ("H20", str(round(self.yield_today_wh / 10))),
            ("H21", str(round(self.max_power_today_w))), ("H22", str(round(self.yield_yesterday_wh / 10))),
            ("H23", str(round(self.max_power_yesterday_w))), ("HSDS", str(self.day_sequence)),
        ]
        self.blocks_sent += 1
        data = encode_block(fields)
        if self.blocks_sent % 10 == 0:  # real controllers interleave asynchronous HEX frames
            data = b":A0102000543\n" + data
        return data

    def read_printer_file(self) -> None:
        path = self.args.printer_w_file
        if path:
            try:
                self.printer_w = max(0.0, float(Path(path).read_text().strip() or 0.0))
            except (OSError, ValueError):
                pass  # the writer may be mid-update or absent; keep the last value


def _listen_stdin(controller: SimulatedController, stop: threading.Event) -> None:
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        if parts[0] == "printer_w" and len(parts) == 2:
            try:
                controller.printer_w = max(0.0, float(parts[1]))
            except ValueError:
                print(f"simcontroller: bad printer_w {parts[1]!r}", file=sys.stderr)
    stop.set()


def main() -> int:
    # Ctrl-C reaches the whole process group: the parent decides when we stop (stdin EOF or
    # "quit"), so a terminal interrupt does not kill the port under a daemon shutting down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = SimControllerArgs.model_validate_json(sys.stdin.readline())
    controller = SimulatedController(args)
    master_fd, slave_fd = os.openpty()
    tty.setraw(slave_fd)
    os.set_blocking(master_fd, False)  # nobody reading: drop blocks, as a real device would
    print(f"PTY {os.ttyname(slave_fd)}", flush=True)
    stop = threading.Event()
    threading.Thread(target=_listen_stdin, args=(controller, stop), daemon=True).start()
    next_s = time.monotonic()
    try:
        while not stop.is_set():
            controller.read_printer_file()
            controller.advance()
            try:
                os.write(master_fd, controller.block())
            except BlockingIOError:
                pass
            except OSError:
                break
            next_s += BLOCK_PERIOD_S
            stop.wait(max(0.0, next_s - time.monotonic()))
    finally:
        os.close(master_fd)
        os.close(slave_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
