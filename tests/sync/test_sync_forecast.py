"""The hub-fed forecast (issue #15, 1a): Open-Meteo's answer -> the hub -> a signed forecast -> the planner.

Never the network: Open-Meteo is played by a local ``http.server`` on a free loopback port that answers
in the API's documented JSON (``hourly.time`` in Unix seconds with ``timeformat=unixtime``,
``hourly.cloud_cover`` in percent, ``hourly_units``; errors as HTTP 400 ``{"error": true, "reason": ...}``),
and the provider's base URL points at it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from sync_harness import free_port, ledger_rows, node_config, wait_for

from node.hub.forecasts import ForecastFeeder, ForecastUnavailable, OpenMeteo, forecast_command
from node.hub.server import Hub, queue_command
from node.sync import protocol as p
from node.sync.signing import SigningKey

SITE = p.NodeSite(latitude_deg=-1.2921, longitude_deg=36.8219, altitude_m=1795, timezone="Africa/Nairobi",
                  array_peak_w=400, array_tilt_deg=10, array_azimuth_deg=0)


def open_meteo_answer(latitude: float, longitude: float, forecast_days: int, now_s: float) -> dict:
    """An answer shaped as Open-Meteo documents it: hourly from 00:00 UTC today, ``forecast_days`` long.

    Cloud cover climbs 0, 5, 10 ... (mod 105, so 100 appears) with one null hour (two hours after ``now_s``),
    as the API sends where a model has no value.
    """
    day0 = int(now_s // 86400) * 86400
    times = [day0 + 3600 * h for h in range(24 * forecast_days)]
    cover: list[float | None] = [float((5 * h) % 105) for h in range(len(times))]
    cover[int((now_s - day0) // 3600) + 2] = None  # two hours ahead: always inside what the hub keeps
    return {"latitude": round(latitude, 4), "longitude": round(longitude, 4), "generationtime_ms": 0.08,
            "utc_offset_seconds": 0, "timezone": "GMT", "timezone_abbreviation": "GMT", "elevation": 1795.0,
            "hourly_units": {"time": "unixtime", "cloud_cover": "%"},
            "hourly": {"time": times, "cloud_cover": cover}}


@dataclass
class FakeOpenMeteo:
    """Open-Meteo's forecast endpoint on loopback; ``fail`` makes it answer as the API does on a bad request."""

    port: int
    requests: list[dict[str, list[str]]] = field(default_factory=list)
    fail: str | None = None
    now_s: float | None = None  # the answer's "today" (None: the time of the request)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def open_meteo() -> Iterator[FakeOpenMeteo]:
    fake = FakeOpenMeteo(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urlparse(self.path)
            query = parse_qs(url.query)
            fake.requests.append(query)
            if fake.fail is not None or url.path != "/v1/forecast":
                body, status = {"error": True, "reason": fake.fail or "not found"}, 400
            else:
                body, status = open_meteo_answer(float(query["latitude"][0]), float(query["longitude"][0]),
                                                 int(query["forecast_days"][0]), fake.now_s or time.time()), 200
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    fake.server = ThreadingHTTPServer(("127.0.0.1", fake.port), Handler)
    thread = threading.Thread(target=fake.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_open_meteos_documented_answer_becomes_the_planners_forecast(open_meteo: FakeOpenMeteo) -> None:
    now_s = open_meteo.now_s = time.time()
    forecast = OpenMeteo(open_meteo.url, hours=48).fetch(SITE, now_s)
    query = open_meteo.requests[-1]
    assert query["hourly"] == ["cloud_cover"] and query["timeformat"] == ["unixtime"]
    assert float(query["latitude"][0]) == pytest.approx(SITE.latitude_deg)
    assert float(query["longitude"][0]) == pytest.approx(SITE.longitude_deg)
    assert forecast.site == p.ForecastSite(latitude=SITE.latitude_deg, longitude=SITE.longitude_deg)
    assert forecast.issued_at.timestamp() == pytest.approx(now_s)
    # from the hour before now to 48 h ahead, the null hour left out, the values as served
    answer = open_meteo_answer(SITE.latitude_deg, SITE.longitude_deg, 3, now_s)["hourly"]
    expected = [(t, c) for t, c in zip(answer["time"], answer["cloud_cover"], strict=True)
                if c is not None and now_s - 3600 <= t <= now_s + 48 * 3600]
    assert [(pt.t_utc.timestamp(), pt.cloud_cover_pct) for pt in forecast.points] == expected
    assert len(expected) == 48 and expected[0][0] <= now_s and expected[-1][0] >= now_s + 47 * 3600


def test_a_forecast_service_that_fails_is_a_sentence_in_the_hubs_log(open_meteo: FakeOpenMeteo, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    open_meteo.fail = "Latitude must be in range of -90 to 90°."
    with pytest.raises(ForecastUnavailable, match="HTTP 400: Latitude must be in range"):
        OpenMeteo(open_meteo.url).fetch(SITE, time.time())
    with pytest.raises(ForecastUnavailable, match="unreachable"):
        OpenMeteo(f"http://127.0.0.1:{free_port()}", timeout_s=2).fetch(SITE, time.time())
    with pytest.raises(ForecastUnavailable, match="without hourly.time"):
        OpenMeteo().parse(b'{"latitude": 1}', SITE, time.time())
    # the feeder of a hub whose service fails logs it, queues nothing, and does not ask again every round
    from node.hub.backends import open_ledger

    ledger = open_ledger(tmp_path / "ledger.sqlite")
    try:
        with ledger.tx() as conn:
            conn.execute("INSERT INTO nodes(node_id, online, site, protocol_minor) VALUES('n1', 1, ?, 1)",
                         (SITE.model_dump_json(),))
        feeder = ForecastFeeder(ledger, OpenMeteo(open_meteo.url), "hub-test", queue_command)
        with caplog.at_level(logging.WARNING, logger="node.hub.forecasts"):
            assert feeder.run_once() == 0
            assert feeder.run_once() == 0
        assert len(open_meteo.requests) == 2  # the one above, and one round of the feeder: the next waits
        assert [r.getMessage() for r in caplog.records][-1].startswith("hub: no forecast for n1")
        assert "HTTP 400" in feeder.last_error and not ledger_rows_of(ledger, "SELECT 1 FROM commands")
        # back in service: the next due round sends it, in the form of the node's minor version
        open_meteo.fail = None
        feeder._retry_after.clear()
        assert feeder.run_once() == 1
        (row,) = ledger_rows_of(ledger, "SELECT kind, args FROM commands")
        assert row["kind"] == "forecast" and json.loads(row["args"])["provider"] == "open-meteo"
        assert feeder.run_once() == 0  # not due again for interval_s
    finally:
        ledger.close()


def ledger_rows_of(ledger, sql: str) -> list[dict]:  # noqa: ANN001
    return ledger.read(lambda c: [dict(r) for r in c.execute(sql).fetchall()])


def test_a_node_of_minor_0_gets_the_old_points_form() -> None:
    forecast = OpenMeteo().parse(json.dumps(open_meteo_answer(0, 0, 2, 1.8e9)).encode(), SITE, 1.8e9)
    old = forecast_command(0, "open-meteo", forecast)
    new = forecast_command(1, "open-meteo", forecast)
    for args, model in ((old, p.CloudForecastArgs), (new, p.ForecastArgs)):
        command = p.Command(node_id="n1", seq=1, issued_s=0, expires_s=1, hub_time_s=0, command_id="a" * 32,
                            args=args)
        assert isinstance(command.args, model)
    assert [pt["cloud_pct"] for pt in old["points"]] == [pt.cloud_cover_pct for pt in forecast.points]


def test_the_hub_feeds_a_nodes_planner_with_its_sites_forecast(mosquitto, open_meteo: FakeOpenMeteo,
                                                               tmp_path: Path) -> None:
    """hello (with the site) -> the hub fetches for that place -> a signed forecast command -> the planner plans
    on "hub"; the node's plan state says so."""
    from node.clock import Clock
    from node.daemon import make_gate, node_site
    from node.jobs import Jobs
    from node.node import Node
    from node.plan.planner import Planner
    from node.printer.profile import load_profile
    from node.store import Store
    from node.sync.client import Sync

    hub_dir = tmp_path / "hub"
    SigningKey.generate().save(hub_dir / "hub.key")
    hub = Hub(hub_dir, mosquitto.settings("hub"), forecast_provider=OpenMeteo(open_meteo.url, hours=48))
    hub.start()

    async def main() -> None:
        config = node_config(tmp_path / "n1", mosquitto, "n1", [hub.key.public_hex], state_interval_s=0)
        config = config.model_copy(update={"site": config.site.model_copy(update={"latitude": SITE.latitude_deg,
                                                                                  "longitude": SITE.longitude_deg})})
        store = await asyncio.to_thread(lambda: Store(config.state_dir / "node.sqlite").open())
        node = Node(config.node, Clock())
        jobs = node.add(Jobs(node, store))
        planner = node.add(Planner(node, config.planner.model_copy(update={"enabled": False}), site=config.site,
                                   array=config.array, forecast=config.forecast, jobs=jobs,
                                   battery=config.battery.plant_params(),
                                   printer_profile=load_profile(config.printer.profile),
                                   energy_profile_for=lambda job: None))
        sync = node.add(Sync(node, config.sync, store, jobs, files_dir=config.files_dir,
                             max_file_bytes=config.jobs.max_file_bytes, reserve_bytes=0, gate=make_gate(config),
                             printer_profile=load_profile(config.printer.profile), site=node_site(config)))
        await node.start()
        try:
            await wait_for(lambda: planner.cloud_forecast is not None, what="the hub's forecast at the planner")
            query = open_meteo.requests[-1]
            assert float(query["latitude"][0]) == pytest.approx(SITE.latitude_deg)  # the place of the hello
            forecast = planner.cloud_forecast
            assert forecast.site.latitude == pytest.approx(SITE.latitude_deg)
            assert time.time() - 120 < forecast.issued_at.timestamp() <= time.time()
            served = open_meteo_answer(0, 0, 3, forecast.issued_at.timestamp())["hourly"]
            by_time = dict(zip(served["time"], served["cloud_cover"], strict=True))
            assert all(by_time[pt.t_utc.timestamp()] == pt.cloud_cover_pct for pt in forecast.points)
            assert planner.status()["forecast_source"] == "hub"
            # the plan names it too (a real pvlib forecast on the hub's cloud cover), and so does state/plan
            await planner.replan("test")
            assert planner.last_summary is not None and planner.last_summary.forecast_source == "hub"
            await wait_for(lambda: getattr(sync._state_docs.get("plan"), "forecast_source", None) == "hub",
                           what="state/plan names the hub's forecast")
            (result,) = ledger_rows(hub, "SELECT kind, ok, detail FROM commands WHERE node_id = 'n1'")
            assert result["kind"] == "forecast"
            await wait_for(lambda: ledger_rows(hub, "SELECT ok FROM commands WHERE ok = 1"), what="answered")
            assert ledger_rows(hub, "SELECT protocol_minor FROM nodes")[0]["protocol_minor"] == p.PROTOCOL_MINOR
        finally:
            await node.stop()
            await asyncio.to_thread(store.close)

    try:
        asyncio.run(main())
    finally:
        hub.stop()
