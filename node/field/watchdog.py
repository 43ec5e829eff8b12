"""The systemd watchdog, fed only while the daemon is really healthy.

systemd restarts a ``WatchdogSec=`` service that stops sending ``WATCHDOG=1``
(sd_watchdog_enabled(3), systemd.service(5)).  Pinging from a thread would
keep a daemon whose event loop hangs alive forever, so here every ping is sent
*from the event loop* and only when:

* a loop-lag probe (a task that sleeps ``probe_interval_s`` and measures how
  late it wakes) has woken on time within the last ping period, and
* the store thread answered a trivial query within ``store_timeout_s``
  (a wedged SQLite thread is a hang too).

Pings go at half of ``WATCHDOG_USEC`` as the man page recommends.  Outside
systemd (no ``WATCHDOG_USEC``, or ``WATCHDOG_PID`` names another process) the
probe still runs and reports lag in ``status``, but nothing is sent.

``debug_block_loop_after_s`` makes the daemon block its own loop once (a
``time.sleep`` on the loop) so tests can show the pings stop; it is off by
default and documented as test-only.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from node.field.config import WatchdogSection
from node.field.sdnotify import notify
from node.node import Component, Node
from node.store import Store

log = logging.getLogger(__name__)


def watchdog_interval_s(environ: dict[str, str] | os._Environ[str] = os.environ, pid: int | None = None) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, or None when systemd does not expect pings from us."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner and int(owner) != (os.getpid() if pid is None else pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


@dataclass
class Health:
    healthy: bool
    reason: str


def assess(now_s: float, last_probe_ok_s: float | None, last_store_ok_s: float | None,
           loop_window_s: float, store_window_s: float) -> Health:
    """Healthy iff the loop probe woke on time within ``loop_window_s`` and the store answered within its window."""
    if last_probe_ok_s is None or now_s - last_probe_ok_s > loop_window_s:
        return Health(False, "event loop lagging")
    if last_store_ok_s is None or now_s - last_store_ok_s > store_window_s:
        return Health(False, "store thread not answering")
    return Health(True, "ok")


class Watchdog(Component):
    name = "watchdog"
    section = "watchdog"

    def __init__(self, node: Node, config: WatchdogSection, store: Store | None) -> None:
        super().__init__(node, config)
        self.config: WatchdogSection = config
        self.store = store
        self.ping_interval_s = watchdog_interval_s()
        self.pings_sent = 0
        self.max_lag_seen_s = 0.0
        self.last_lag_s = 0.0
        self._last_probe_ok_s: float | None = None
        self._last_store_ok_s: float | None = None if store is not None else float("inf")
        self._health = Health(True, "starting")

    async def start(self) -> None:
        now = time.monotonic()
        self._last_probe_ok_s = now
        if self.store is not None:
            self._last_store_ok_s = now
        self.node.spawn(self._probe_loop(), "watchdog-probe")
        if self.store is not None:
            self.node.spawn(self._store_loop(), "watchdog-store")
        if self.ping_interval_s is not None:
            log.info("systemd watchdog: pinging every %.1f s while healthy", self.ping_interval_s)
            self.node.spawn(self._ping_loop(self.ping_interval_s), "watchdog-ping")
        if self.config.debug_block_loop_after_s is not None:
            self.node.spawn(self._debug_block(), "watchdog-debug-block")

    def status(self) -> dict[str, Any]:
        return {"systemd": self.ping_interval_s is not None, "ping_interval_s": self.ping_interval_s,
                "pings_sent": self.pings_sent, "healthy": self._health.healthy, "reason": self._health.reason,
                "loop_lag_s": round(self.last_lag_s, 4), "max_loop_lag_seen_s": round(self.max_lag_seen_s, 4)}

    async def _probe_loop(self) -> None:
        interval = self.config.probe_interval_s
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval)
            lag = time.monotonic() - before - interval
            self.last_lag_s = lag
            self.max_lag_seen_s = max(self.max_lag_seen_s, lag)
            if lag <= self.config.max_loop_lag_s:
                self._last_probe_ok_s = time.monotonic()
            else:
                log.warning("event loop lagged %.1f s (limit %.1f s)", lag, self.config.max_loop_lag_s)

    async def _store_loop(self) -> None:
        assert self.store is not None
        store = self.store
        while True:
            try:
                await asyncio.wait_for(store.run(lambda c: c.execute("SELECT 1").fetchone()), self.config.store_timeout_s)
                self._last_store_ok_s = time.monotonic()
            except TimeoutError:
                log.warning("store thread did not answer within %.0f s", self.config.store_timeout_s)
            except Exception as exc:  # a broken store is unhealthy, the probe keeps going
                log.warning("store health query failed: %s", exc)
            await asyncio.sleep(self.config.probe_interval_s * 2)

    def check(self) -> Health:
        """A probe must have woken on time within one probe period plus the allowed lag."""
        probe = self.config.probe_interval_s
        loop_window = 2 * probe + self.config.max_loop_lag_s
        store_window = self.config.store_timeout_s + 3 * probe
        return assess(time.monotonic(), self._last_probe_ok_s, self._last_store_ok_s, loop_window, store_window)

    async def _ping_loop(self, interval_s: float) -> None:
        while True:
            health = self.check()
            if health.healthy:
                if notify("WATCHDOG=1"):
                    self.pings_sent += 1
            elif health.reason != self._health.reason:
                log.error("not feeding the systemd watchdog: %s", health.reason)
                notify(f"STATUS=unhealthy: {health.reason}")
            self._health = health
            await asyncio.sleep(interval_s)

    async def _debug_block(self) -> None:
        await asyncio.sleep(self.config.debug_block_loop_after_s or 0.0)
        block_s = self.config.debug_block_loop_for_s
        log.warning("debug: blocking the event loop for %.1f s (watchdog.debug_block_loop_after_s)", block_s)
        notify(f"STATUS=debug: blocking the event loop for {block_s:g} s")
        time.sleep(block_s)  # deliberately on the loop: this is the hang being simulated
        notify("STATUS=debug: event loop unblocked")
