"""Cloud-cover forecasts for each node's site, fetched by the hub and sent to the node (issue #15, 1a).

A node in the field has no internet of its own; its hub (online in an office) does.  So the hub asks a
public forecast service for each node's site (the ``NodeSite`` of its hello, ``nodes.site``) and sends
the answer on the wire as the planner's ``CloudCoverForecast`` (a signed ``forecast`` command, protocol
1.1; nodes of minor 0 get the old ``cloud_forecast`` points).

Providers are small classes with one method, ``fetch(site, now_s) -> CloudCoverForecast``, so another
service can be added beside :class:`OpenMeteo` (no key needed) without touching the feeder.  A provider
raises :class:`ForecastUnavailable` with a sentence; the feeder logs it and tries again next round: a
network failure at the hub is a line in its log, never a stop.

:class:`ForecastFeeder` runs in its own thread in ``hub serve``: every ``FEED_ROUND_S`` (and at once after
a hello) it finds the nodes that are online, have a site, and got no forecast in ``interval_s``
(3 h by default), fetches (one request per place, rounded to 0.01°, per round) and queues the commands;
the pump signs and sends them like any other command.  Only the holder of the ``forecast`` lease feeds,
so several hub workers fetch each forecast once.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from node.hub.ledger import Ledger
from node.sync import protocol as p

log = logging.getLogger(__name__)

FEED_ROUND_S = 30.0  # real seconds between looks for nodes whose forecast is due
RETRY_S = 600.0  # after a failed fetch, a place is asked again this much later (not every round)
FORECAST_LEASE_S = 120.0
DEFAULT_INTERVAL_S = 3 * 3600.0
DEFAULT_HOURS = 72


class ForecastUnavailable(Exception):
    """The provider could not give a forecast; the message is one sentence for the hub's log."""


class ForecastProvider(Protocol):
    name: str

    def fetch(self, site: p.NodeSite, now_s: float) -> p.CloudCoverForecast:
        """A cloud-cover forecast for ``site`` (raise ForecastUnavailable with a sentence)."""
        ...


class OpenMeteo:
    """Open-Meteo's forecast API (https://open-meteo.com, free, no key): hourly total cloud cover.

    Request: ``GET <base_url>/v1/forecast?latitude=..&longitude=..&hourly=cloud_cover&timeformat=unixtime
    &timezone=GMT&forecast_days=N``.  Answer (the documented JSON): ``hourly.time`` (Unix seconds, UTC)
    and ``hourly.cloud_cover`` (percent, the hour's total cloud cover; null where the model has none),
    ``hourly_units`` naming them; an error is HTTP 400 with ``{"error": true, "reason": "..."}``.
    Open-Meteo gives no model run time, so ``issued_at`` is when the hub fetched it.
    """

    name = "open-meteo"

    def __init__(self, base_url: str = "https://api.open-meteo.com", hours: int = DEFAULT_HOURS,
                 timeout_s: float = 20.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.hours = hours
        self.timeout_s = timeout_s

    def url(self, site: p.NodeSite) -> str:
        query = urllib.parse.urlencode({
            "latitude": f"{site.latitude_deg:.4f}", "longitude": f"{site.longitude_deg:.4f}",
            "hourly": "cloud_cover", "timeformat": "unixtime", "timezone": "GMT",
            "forecast_days": max(1, min(16, -(-self.hours // 24) + 1))})
        return f"{self.base_url}/v1/forecast?{query}"

    def fetch(self, site: p.NodeSite, now_s: float) -> p.CloudCoverForecast:
        url = self.url(site)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:  # noqa: S310 (http/https only)
                body = response.read(8 * 1024 * 1024)
        except urllib.error.HTTPError as exc:
            raise ForecastUnavailable(f"{self.name} answered HTTP {exc.code}: {_error_reason(exc)}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ForecastUnavailable(f"{self.name} is unreachable ({reason})") from None
        return self.parse(body, site, now_s)

    def parse(self, body: bytes, site: p.NodeSite, now_s: float) -> p.CloudCoverForecast:
        """The documented answer -> a CloudCoverForecast from the hour before ``now_s`` on, ``hours`` long."""
        try:
            doc = json.loads(body)
            hourly = doc["hourly"]
            times, cover = hourly["time"], hourly["cloud_cover"]
        except (ValueError, KeyError, TypeError):
            raise ForecastUnavailable(f"{self.name} sent an answer without hourly.time and hourly.cloud_cover")\
                from None
        if not isinstance(times, list) or not isinstance(cover, list) or len(times) != len(cover):
            raise ForecastUnavailable(f"{self.name} sent hourly.time and hourly.cloud_cover of different lengths")
        end_s = now_s + self.hours * 3600.0
        points = []
        for t, c in zip(times, cover, strict=True):
            if c is None or not isinstance(t, int | float) or not now_s - 3600.0 <= t <= end_s:
                continue
            points.append(p.CloudCoverPoint(t_utc=datetime.fromtimestamp(t, tz=UTC),
                                            cloud_cover_pct=min(100.0, max(0.0, float(c)))))
        if not points:
            raise ForecastUnavailable(f"{self.name} sent no cloud cover for the next {self.hours} h")
        try:
            return p.CloudCoverForecast(
                issued_at=datetime.fromtimestamp(now_s, tz=UTC),
                site=p.ForecastSite(latitude=site.latitude_deg, longitude=site.longitude_deg), points=points)
        except ValidationError as exc:
            raise ForecastUnavailable(f"{self.name} sent an unusable forecast: {str(exc).splitlines()[0]}") from None


def _error_reason(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read(64 * 1024)).get("reason") or exc.reason)
    except (ValueError, AttributeError, OSError):
        return str(exc.reason)


PROVIDERS: dict[str, Callable[..., ForecastProvider]] = {"open-meteo": OpenMeteo}


def make_provider(name: str, base_url: str | None = None) -> ForecastProvider | None:
    """``open-meteo`` (optionally at another base URL: a mirror, a test server) or ``none``."""
    if name == "none":
        return None
    factory = PROVIDERS.get(name)
    if factory is None:
        raise ValueError(f"unknown forecast provider {name!r} (known: none, {', '.join(PROVIDERS)})")
    return factory(base_url) if base_url else factory()


def forecast_command(minor: int, provider: str, forecast: p.CloudCoverForecast) -> dict[str, Any]:
    """The command's arguments in the form the node speaks: 1.1's whole forecast, or 1.0's bare points."""
    if minor >= 1:
        return p.ForecastArgs(provider=provider, forecast=forecast).model_dump(mode="json")
    return p.CloudForecastArgs(points=[p.CloudPoint(t_s=pt.t_utc.timestamp(), cloud_pct=pt.cloud_cover_pct)
                                       for pt in forecast.points]).model_dump(mode="json")


FORECAST_KINDS = ("forecast", "cloud_forecast")


def nodes_due(ledger: Ledger, now_s: float, interval_s: float) -> list[tuple[str, p.NodeSite, int]]:
    """(node, site, minor) of every online node with a site whose last forecast is older than ``interval_s``."""
    def _read(conn: Any) -> list[Any]:
        return conn.execute(
            "SELECT n.node_id, n.site, n.protocol_minor FROM nodes n WHERE n.online = 1 AND n.site IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.node_id = n.node_id AND c.kind IN (?, ?)"
            " AND c.created_s > ?) ORDER BY n.node_id", (*FORECAST_KINDS, now_s - interval_s)).fetchall()

    due = []
    for row in ledger.read(_read):
        try:
            due.append((row["node_id"], p.NodeSite.model_validate_json(row["site"]), int(row["protocol_minor"])))
        except ValidationError as exc:
            log.warning("hub: node %s has an unreadable site (%s); no forecast for it", row["node_id"],
                        str(exc).splitlines()[0])
    return due


class ForecastFeeder:
    """Fetches and queues forecasts for the nodes that are due (see the module docstring)."""

    def __init__(self, ledger: Ledger, provider: ForecastProvider, worker_id: str,
                 queue: Callable[[Ledger, str, dict[str, Any], float], str], *,
                 interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.provider = provider
        self.worker_id = worker_id
        self.queue = queue
        self.interval_s = interval_s
        self.clock = clock
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counters = {"fetched": 0, "failed": 0, "sent": 0}
        self.last_error: str | None = None
        self._retry_after: dict[tuple[float, float], float] = {}  # place -> clock time of the next try

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="hub-forecasts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.ledger.release_lease("forecast", self.worker_id)
        except Exception:  # stopping anyway; the lease expires on its own
            log.warning("hub: could not release the forecast lease", exc_info=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a ledger hiccup: logged, the next round tries again
                log.exception("hub: forecast round failed")
            self.wake.wait(FEED_ROUND_S)
            self.wake.clear()

    def run_once(self) -> int:
        """One round: fetch for every due node, queue the commands; returns how many were queued."""
        now = self.clock()
        if not self.ledger.try_lease("forecast", self.worker_id, now, FORECAST_LEASE_S):
            return 0
        fetched: dict[tuple[float, float], p.CloudCoverForecast | None] = {}
        sent = 0
        for node_id, site, minor in nodes_due(self.ledger, now, self.interval_s):
            if self._stop.is_set():
                break
            place = (round(site.latitude_deg, 2), round(site.longitude_deg, 2))
            if now < self._retry_after.get(place, 0.0):
                continue
            if place not in fetched:
                try:
                    fetched[place] = self.provider.fetch(site, now)
                    self.counters["fetched"] += 1
                    self.last_error = None
                except ForecastUnavailable as exc:
                    fetched[place] = None
                    self._retry_after[place] = now + RETRY_S
                    self.counters["failed"] += 1
                    self.last_error = str(exc)
                    log.warning("hub: no forecast for %s at %.2f, %.2f (next try in %.0f min): %s", node_id, *place,
                                RETRY_S / 60, exc)
            forecast = fetched[place]
            if forecast is None:
                continue
            self.queue(self.ledger, node_id, forecast_command(minor, self.provider.name, forecast), now)
            sent += 1
        self.counters["sent"] += sent
        return sent
