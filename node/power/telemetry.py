"""The Telemetry component: read the configured power source, publish normalized samples.

Threads and tasks:
- a **source thread** opens the source and blocks in ``read()`` (pyserial, Modbus, I2C);
  on any failure it closes the source and retries with exponential backoff
  (``retry_initial_s`` doubling to ``retry_max_s``).  A device silent for
  ``reopen_after_s`` is reopened too.  It never lets an exception end it;
- a **consumer task** on the loop stamps each reading with sim time, rejects impossible
  values (logged with the reason, counted), updates the SoC estimator it owns, sends
  ``telemetry_sample`` (and ``battery_level_changed`` when a threshold is crossed) and
  hands the sample to the store recorder;
- a **stale watchdog** sends the last values flagged ``stale=True`` while the device is
  silent for more than ``stale_after_s`` real seconds, and keeps the **link state**: telemetry
  is *lost* once no reading came for ``stale_after_s`` after one did (or after the source kept
  failing from the start: a controller unplugged at boot).  Lost and back are logged once each,
  sent as ``telemetry_link`` and shown in ``status`` (``link``, ``lost_since_t_s``,
  ``lost_for_s``).  While lost the SoC estimator is bridged pessimistically
  (:meth:`~node.power.battery.SocEstimator.bridge`: the node's own draw out, no PV in), so the
  estimate never stays frozen at the last good value; power_guard holds new prints and, later,
  pauses the running one (``lost_hold_starts_after_s``, ``lost_pause_after_s``);
- a **store task** commits the recorder's rows in one transaction every
  ``store.batch_commit_s`` real seconds (see :mod:`node.store.telemetry`).

Wiring: ``node.add(Telemetry(node, config.telemetry, battery=..., site=..., array=..., store=store))``
(node/daemon.py).  It listens to
``temperatures`` to estimate the printer's draw (heater PWM and the printer profile)
when no shunt measures it, and passes that draw to the simulated controller.

The daemon side imports no pvlib, pandas or scipy: only the simulated controller's child
process does (tests/power/test_telemetry.py checks ``sys.modules``).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from node.events import BatteryLevelChanged, TelemetryLink, TelemetrySample, Temperatures
from node.gcode.energy import printer_w_from_report
from node.node import Component, Node
from node.power.battery import SocEstimator
from node.power.config import ArraySection, BatterySection, SiteSection, TelemetrySection
from node.power.sources import Reading, Source, SourceError

if TYPE_CHECKING:
    from node.printer.profile import PrinterProfile
    from node.store import Store

log = logging.getLogger(__name__)

# plausible ranges per cell: outside these a reading is a wiring or parsing fault, not a battery
_CELL_V_RANGE = {"lifepo4": (2.0, 4.0), "lead_acid": (1.6, 2.75)}
_MAX_PV_W = 100_000.0
_MAX_PV_V = 1000.0
SOC_STATE_KEY = "telemetry.soc_estimator"


class ReadingRejected(ValueError):
    """A reading with an impossible value; the message says which and why."""


def check_reading(reading: Reading, battery: BatterySection) -> None:
    for name in ("pv_w", "pv_v", "battery_v", "battery_a", "load_w", "printer_w", "soc_pct",
                 "battery_temperature_c"):
        value = getattr(reading, name)
        if value is not None and not math.isfinite(value):
            raise ReadingRejected(f"{name} is {value}")
    low, high = (v * battery.cells for v in _CELL_V_RANGE[battery.chemistry])
    if reading.battery_v is not None and not low <= reading.battery_v <= high:
        raise ReadingRejected(f"battery_v {reading.battery_v:.2f} V is impossible for a {battery.cells}-cell "
                              f"{battery.chemistry} bank ({low:.1f}-{high:.1f} V)")
    max_a = 10.0 * battery.capacity_ah  # 10 C
    if reading.battery_a is not None and abs(reading.battery_a) > max_a:
        raise ReadingRejected(f"battery_a {reading.battery_a:.1f} A exceeds 10 C ({max_a:.0f} A)")
    for name, top in (("pv_w", _MAX_PV_W), ("pv_v", _MAX_PV_V), ("load_w", _MAX_PV_W), ("printer_w", _MAX_PV_W)):
        value = getattr(reading, name)
        if value is not None and not 0.0 <= value <= top:
            raise ReadingRejected(f"{name} {value} is outside 0..{top:g}")
    if reading.soc_pct is not None and not 0.0 <= reading.soc_pct <= 100.0:
        raise ReadingRejected(f"soc_pct {reading.soc_pct} is outside 0..100")
    if reading.battery_temperature_c is not None and not -40.0 <= reading.battery_temperature_c <= 85.0:
        raise ReadingRejected(f"battery_temperature_c {reading.battery_temperature_c} is outside -40..85")


def to_sample(reading: Reading, t_s: float, estimator: SocEstimator, battery: BatterySection,
              printer_w: float | None = None, stale: bool = False) -> TelemetrySample:
    """Check, feed the SoC estimator, normalize.  Measured SoC (a BMV, a Modbus controller) wins."""
    check_reading(reading, battery)
    soc_pct = reading.soc_pct
    last_full_s = None
    if soc_pct is not None:   # the monitor's own count: anchored where it says it last saw the bank full
        since_full_s = reading.extra.get("seconds_since_full_charge")
        if isinstance(since_full_s, int | float) and since_full_s >= 0 and not stale:
            last_full_s = t_s - since_full_s
    if reading.battery_v is not None and reading.battery_a is not None and not stale:
        estimate = estimator.update(t_s, reading.battery_v, reading.battery_a, reading.battery_temperature_c,
                                    reading.charge_state)
        if soc_pct is None:
            soc_pct = min(100.0, max(0.0, estimate.soc_pct))
            last_full_s = estimator.anchored_full_s
        else:  # a monitor that measures SoC (BMV, SmartShunt, Modbus controller) sets the level
            estimator.monitor.update(estimate.corrected_v, soc_pct)
    elif soc_pct is None and estimator.soc is not None:
        soc_pct = round(estimator.soc * 100.0, 3)
    return TelemetrySample(
        t_s=t_s, source=reading.source, pv_w=reading.pv_w, pv_v=reading.pv_v, battery_v=reading.battery_v,
        battery_a=reading.battery_a, load_w=reading.load_w,
        printer_w=reading.printer_w if reading.printer_w is not None else printer_w,
        soc_pct=soc_pct, last_full_s=last_full_s, charge_state=reading.charge_state, error=reading.error,
        stale=stale)


class Telemetry(Component):
    """Reads ``[telemetry]``; the bank (``battery``), the plant the simulated controller models
    (``site``, ``array``), the printer's profile (its draw from heater PWM), the node's own draw
    (``base_load_w``), the room (``ambient_c``) and the store's batching come as arguments."""

    name = "telemetry"
    section = "telemetry"

    def __init__(self, node: Node, config: TelemetrySection, *, battery: BatterySection, site: SiteSection,
                 array: ArraySection, printer_profile: PrinterProfile | None = None, base_load_w: float = 0.0,
                 ambient_c: float = 22.0, batch_commit_s: float = 5.0, store: Store | None = None,
                 source_factory: Callable[[], Source] | None = None) -> None:
        super().__init__(node, config)
        self.settings: TelemetrySection = config
        self.battery = battery
        self.site = site
        self.array = array
        self.base_load_w = base_load_w
        self.ambient_c = ambient_c
        self.batch_commit_s = batch_commit_s
        self.store = store
        self.estimator = SocEstimator(self.battery)
        self._source_factory = source_factory or self._default_factory
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: asyncio.Queue[Reading] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recorder: Any = None
        self._last_reading: Reading | None = None
        self._last_reading_mono: float | None = None
        self._last_stale_mono = 0.0
        self._printer_w_estimate: float | None = None
        self._printer_w_measured: float | None = None
        self._printer_w_sent: float | None = None
        self._profile = printer_profile
        self.last_sample: TelemetrySample | None = None
        self.level = "ok"
        self.connected = False
        self.last_error: str | None = None
        self.counts = {"samples": 0, "rejected": 0, "stale": 0, "retries": 0, "store_errors": 0, "losses": 0}
        #: "connecting" (no reading yet, no failure yet), "ok", or "lost" (see the module docstring)
        self.link = "connecting"
        self.last_good_t_s: float | None = None  # node time of the last accepted reading of this run
        self.lost_since_t_s: float | None = None  # node time the loss counts from (last reading, or start)
        self._started_t_s = 0.0
        self._started_mono = 0.0
        self._failed_since_mono: float | None = None  # the source thread's first failure since a reading
        self._last_good_mono: float | None = None
        self._source_counters: dict[str, int] = {}

    def _default_factory(self) -> Source:
        from node.power.sources.factory import make_source

        return make_source(self.settings, self.battery, self.site, self.array,
                           self.node.clock.spec())

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started_t_s = self.node.clock.time()
        self._started_mono = time.monotonic()
        self._queue = asyncio.Queue(maxsize=1000)
        if self._profile is None:
            log.warning("telemetry: no printer profile: printer_w will not be estimated")
        self.node.register_event_handler("temperatures", self._on_temperatures)
        if self.store is not None and self.settings.store:
            from node.store.telemetry import TelemetryRecorder

            self._recorder = TelemetryRecorder()
            await self._restore_soc()
            self.node.spawn(self._store_loop(), "telemetry-store")
        self._thread = threading.Thread(target=self._source_thread, name="telemetry-source", daemon=True)
        self._thread.start()
        self.node.spawn(self._consume(), "telemetry-consume")
        self.node.spawn(self._stale_watchdog(), "telemetry-stale")

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)
        if self._recorder is not None:
            await self._flush(save_soc=True)

    def status(self) -> dict[str, Any]:
        sample = self.last_sample
        return {
            "source": self.settings.source, "connected": self.connected, "last_error": self.last_error,
            "link": self.link, "lost_since_t_s": self.lost_since_t_s, "lost_for_s": self.lost_for_s(),
            "last_good_t_s": self.last_good_t_s,
            "level": self.level, "soc_pct": sample.soc_pct if sample else None,
            "soc_certain": self.estimator.certain, "bridged_s": round(self.estimator.bridged_s, 1),
            "last_sample": sample.model_dump() if sample else None,
            "offset_a": self.estimator.offset_a, "syncs": self.estimator.syncs,
            "counts": dict(self.counts), "source_counters": dict(self._source_counters),
        }

    def lost_for_s(self) -> float | None:
        """Node seconds since the loss began (the last reading, or the start), or None while not lost."""
        if self.link != "lost" or self.lost_since_t_s is None:
            return None
        return round(max(0.0, self.node.clock.time() - self.lost_since_t_s), 1)

    # --- the source thread --------------------------------------------------------------------
    def _source_thread(self) -> None:
        delay_s = self.settings.retry_initial_s
        while not self._stop.is_set():
            source: Source | None = None
            printer_shunt: Source | None = None
            try:
                source = self._source_factory()
                source.open()
                printer_shunt = self._open_printer_shunt()
                self.connected = True
                self.last_error = None
                silent_since = time.monotonic()
                while not self._stop.is_set():
                    self._pass_printer_w(source)
                    reading = source.read(self.settings.read_timeout_s)
                    self._source_counters = source.counters()
                    if reading is None:
                        if time.monotonic() - silent_since > self.settings.reopen_after_s:
                            raise SourceError(f"{self.settings.source}: silent for "
                                              f"{self.settings.reopen_after_s:.0f} s")
                        continue
                    silent_since = time.monotonic()
                    delay_s = self.settings.retry_initial_s
                    printer_shunt = self._read_printer_shunt(printer_shunt)
                    self._deliver(reading)
                    if self.settings.source in ("epever", "renogy", "ina219", "ina226"):
                        self._stop.wait(self.settings.poll_interval_s)
            except (SourceError, ValueError) as exc:
                self.last_error = str(exc)
                self._note_failure()
                if self.link == "lost":  # said once at the loss; the retries are routine now
                    log.debug("telemetry: %s; retrying in %.1f s", exc, delay_s)
                else:
                    log.warning("telemetry: %s; retrying in %.1f s", exc, delay_s)
            except Exception as exc:  # never let the thread die: the daemon keeps running
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._note_failure()
                log.exception("telemetry: source failed; retrying in %.1f s", delay_s)
            finally:
                self.connected = False
                for opened in (source, printer_shunt):
                    if opened is not None:
                        with contextlib.suppress(Exception):
                            opened.close()
            if self._stop.wait(delay_s):
                break
            self.counts["retries"] += 1
            delay_s = min(self.settings.retry_max_s, delay_s * 2)

    def _note_failure(self) -> None:
        if self._failed_since_mono is None:
            self._failed_since_mono = time.monotonic()

    def _open_printer_shunt(self) -> Source | None:
        """The optional INA shunt on the printer's feed; a failure only loses the measurement."""
        section = self.settings.printer_shunt
        if section is None:
            return None
        from node.power.sources.ina import InaSource

        shunt = InaSource(section, role="printer")
        try:
            shunt.open()
        except (SourceError, ValueError) as exc:
            log.warning("telemetry: printer shunt unavailable (%s): printer_w is estimated", exc)
            return None
        return shunt

    def _read_printer_shunt(self, shunt: Source | None) -> Source | None:
        if shunt is None:
            return None
        try:
            reading = shunt.read(self.settings.read_timeout_s)
        except SourceError as exc:
            log.warning("telemetry: printer shunt failed (%s): printer_w is estimated until the next reopen", exc)
            self._printer_w_measured = None
            with contextlib.suppress(Exception):
                shunt.close()
            return None
        if reading is not None:
            self._printer_w_measured = reading.printer_w
        return shunt

    @property
    def printer_w(self) -> float | None:
        """Measured by the printer shunt if there is one, else estimated from heater PWM."""
        return self._printer_w_measured if self._printer_w_measured is not None else self._printer_w_estimate

    def _pass_printer_w(self, source: Source) -> None:
        setter = getattr(source, "set_printer_w", None)
        wanted = self.printer_w
        if setter is not None and wanted is not None and wanted != self._printer_w_sent:
            setter(wanted)
            self._printer_w_sent = wanted

    def _deliver(self, reading: Reading) -> None:
        loop, queue = self._loop, self._queue
        if loop is None or queue is None or loop.is_closed():
            return

        def put() -> None:
            if queue.full():
                queue.get_nowait()  # the loop is behind: keep the newest
            queue.put_nowait(reading)

        loop.call_soon_threadsafe(put)

    # --- on the loop --------------------------------------------------------------------------
    async def _consume(self) -> None:
        assert self._queue is not None
        while True:
            reading = await self._queue.get()
            self._last_reading_mono = time.monotonic()
            sample = await self.handle_reading(reading)
            if sample is not None:
                self._last_reading = reading  # stale samples repeat the last accepted values
                self._last_good_mono, self._failed_since_mono = time.monotonic(), None
                previous, self.last_good_t_s = self.last_good_t_s, sample.t_s
                if self.link != "ok":
                    await self._link_back(sample, previous)

    async def _link_back(self, sample: TelemetrySample, previous_t_s: float | None) -> None:
        was_lost, since_t_s = self.link == "lost", self.lost_since_t_s
        self.link, self.lost_since_t_s = "ok", None
        if not was_lost:
            log.info("telemetry: %s reading (SoC %s %%)", self.settings.source, sample.soc_pct)
            return
        gap_s = max(0.0, sample.t_s - (since_t_s if since_t_s is not None else sample.t_s))
        log.warning("telemetry: %s is back after %s without readings; SoC %s %% (counted on from the "
                    "pessimistic estimate of the gap, uncertain until the next full charge)",
                    self.settings.source, duration_text(gap_s), sample.soc_pct)
        await self.node.send_event("telemetry_link", TelemetryLink(
            t_s=sample.t_s, state="ok", since_t_s=previous_t_s, lost_for_s=gap_s,
            reason=f"{self.settings.source} back", soc_pct=sample.soc_pct))

    def _next_stale_check_s(self, now_mono: float) -> float:
        """While readings flow, nothing can go stale or be lost before the last good one is ``stale_after_s``
        old: sleep until then (a wake-up every ``stale_after_s``, not every second); before the first
        reading and while lost (the SoC bridge, stale samples), every second as before."""
        step_s = min(1.0, self.settings.stale_after_s / 2)
        if self.link != "ok" or self._last_good_mono is None:
            return step_s
        return max(step_s, self._last_good_mono + self.settings.stale_after_s - now_mono + 0.01)

    def _should_be_lost(self, now_mono: float) -> bool:
        """Silent for ``stale_after_s`` after a reading, or failing that long with none since the start."""
        period_s = self.settings.stale_after_s
        if self._last_good_mono is not None:  # rejected readings do not count: nonsense is no telemetry
            return now_mono - self._last_good_mono > period_s
        failed = self._failed_since_mono
        return failed is not None and now_mono - max(failed, self._started_mono) > period_s

    async def _link_lost(self) -> None:
        now_s = self.node.clock.time()
        self.link = "lost"
        self.counts["losses"] += 1
        self.lost_since_t_s = self.last_good_t_s if self.last_good_t_s is not None else self._started_t_s
        why = self.last_error or f"silent for {self.settings.stale_after_s:g} s"
        since = "no reading since the node started" if self.last_good_t_s is None else \
            f"last reading {duration_text(now_s - self.lost_since_t_s)} ago"
        log.warning("telemetry: %s LOST (%s; %s): SoC estimated without it (own draw out, no PV in); no new "
                    "print after %s, the running one pauses after %s unless it returns", self.settings.source,
                    why, since, duration_text(self.settings.lost_hold_starts_after_s),
                    duration_text(self.settings.lost_pause_after_s))
        soc = self.estimator.soc
        await self.node.send_event("telemetry_link", TelemetryLink(
            t_s=now_s, state="lost", since_t_s=self.last_good_t_s, lost_for_s=max(0.0, now_s - self.lost_since_t_s),
            reason=why, soc_pct=None if soc is None else min(100.0, max(0.0, round(soc * 100.0, 3)))))

    def _bridge(self) -> None:
        """While lost: count the node's own draw out of the estimate (see SocEstimator.bridge)."""
        if self.last_good_t_s is None:
            return  # nothing measured this run: the restored estimate is as old as it is
        draw_w = (self.printer_w or 0.0) + self.base_load_w
        self.estimator.bridge(self.node.clock.time(), draw_w)

    async def handle_reading(self, reading: Reading, stale: bool = False) -> TelemetrySample | None:
        t_s = self.node.clock.time()
        try:
            sample = to_sample(reading, t_s, self.estimator, self.battery, self.printer_w, stale)
        except ReadingRejected as exc:
            self.counts["rejected"] += 1
            log.warning("telemetry: reading from %s rejected: %s", reading.source, exc)
            return None
        self.counts["stale" if stale else "samples"] += 1
        self.last_sample = sample
        if self._recorder is not None:
            self._recorder.add(sample)
        await self.node.send_event("telemetry_sample", sample)
        if not stale:
            await self._check_level(sample)
        return sample

    async def _check_level(self, sample: TelemetrySample) -> None:
        level = self.estimator.monitor.level
        if level != self.level:
            previous, self.level = self.level, level
            log.warning("telemetry: battery level %s -> %s (SoC %s %%, corrected %.2f V)", previous, level,
                        sample.soc_pct, self.estimator.corrected_v or 0.0)
            await self.node.send_event("battery_level_changed", BatteryLevelChanged(
                t_s=sample.t_s, level=level, previous=previous, soc_pct=sample.soc_pct,
                corrected_v=self.estimator.corrected_v))

    async def _stale_watchdog(self) -> None:
        period_s = self.settings.stale_after_s
        while True:
            await asyncio.sleep(self._next_stale_check_s(time.monotonic()))
            now = time.monotonic()
            if self.link != "lost" and self._should_be_lost(now):
                await self._link_lost()
            if self.link == "lost":
                self._bridge()
            last = self._last_reading_mono
            if last is None or now - last <= period_s or now - self._last_stale_mono < period_s:
                continue
            self._last_stale_mono = now
            base = self._last_reading or Reading(source=self.settings.source)
            await self.handle_reading(base, stale=True)

    def _on_temperatures(self, event: Temperatures) -> None:
        """Estimate the printer's draw from heater PWM (or the power to hold the targets)."""
        profile = self._profile
        if profile is None:
            return
        self._printer_w_estimate = round(printer_w_from_report(
            profile, event.hotend_pwm, event.bed_pwm, event.hotend_target_c, event.bed_target_c,
            event.hotend_c, self.ambient_c), 1)

    # --- the store ----------------------------------------------------------------------------
    async def _restore_soc(self) -> None:
        try:
            raw = await self.store.run(lambda conn: self.store.get_meta(conn, SOC_STATE_KEY))
            if raw:
                self.estimator.restore(json.loads(raw))
        except Exception as exc:  # an unreadable state only costs a resync
            log.warning("telemetry: SoC state not restored: %s", exc)

    async def _store_loop(self) -> None:
        every_s = self.batch_commit_s
        saves = 0
        while True:
            await asyncio.sleep(every_s)
            saves += 1
            await self._flush(save_soc=saves % max(1, round(60 / every_s)) == 0)

    async def _flush(self, save_soc: bool) -> None:
        from node.store.db import transaction
        from node.store.telemetry import write_batch

        batch = self._recorder.take_batch()
        state = json.dumps(self.estimator.state()) if save_soc else None

        def write(conn: Any) -> int:
            written = write_batch(conn, batch)
            if state is not None:
                with transaction(conn):
                    self.store.set_meta(conn, SOC_STATE_KEY, state)
            return written

        try:
            await self.store.run(write)
        except Exception as exc:  # a full disk loses history, never the daemon
            self.counts["store_errors"] += 1
            log.error("telemetry: %d samples not stored: %s", len(batch.raw_rows), exc)


def duration_text(seconds: float) -> str:
    """``"42 s"``, ``"17 min"``, ``"3.5 h"``: for log lines and reasons a person reads."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
