"""The hub's fleet page in the distribution's headless Chromium, on a phone-sized window, served by a real
``printnode hub web`` over a real SQLite ledger; the fleet is written through the hub's own message handler
(tests/hub/fleet_world.py), in the same process as the test, while the page runs (SQLite WAL: two processes).
One browser session: log in, read the nodes table, the map, the charts, the alerts and the jobs, follow a
job's history, send a file to the best node and to a named node, cancel one, see a report arrive, and be
refused control without the page's CSRF token or the API key. Screenshots go to test-artifacts/fleet/.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.hub import fleet
from tests.conftest import wait_for
from tests.hub.fleet_world import Clock, build, make_hub, progress
from tests.web.conftest import PASSWORD
from tests.web.test_page import ARTIFACTS as NODE_ARTIFACTS
from tests.web.test_page import CHROMEDRIVER, CHROMIUM, browser  # noqa: F401 (the one browser fixture)

ARTIFACTS = NODE_ARTIFACTS.parent / "fleet"

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason="needs the distribution's chromium and chromium-driver "
                                       "(scripts/ensure-system-deps.sh test installs them)")


@pytest.fixture
def fleet_hub(tmp_path: Path) -> Iterator[tuple[object, dict[str, str], str, Path]]:
    """The world built a moment ago on the wall clock, and `printnode hub web` serving it on a free port."""
    hub_dir = tmp_path / "hub"
    clock = Clock(time.time())
    hub = make_hub(hub_dir, clock=clock)
    jobs = build(hub, clock, tmp_path / "files")
    init = subprocess.run([sys.executable, "-m", "node", "hub", "--dir", str(hub_dir), "web", "init",
                           "--password-stdin"], input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    log = (tmp_path / "hub-web.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "node", "hub", "--dir", str(hub_dir), "web", "--port", "0",
                                "--bind", "127.0.0.1"], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"fleet page: (http://127\.0\.0\.1:\d+/)", line)
        assert match, f"no URL from hub web: {line!r} {(tmp_path / 'hub-web.log').read_text()}"
        yield hub, jobs, match.group(1), hub_dir
    finally:
        process.terminate()
        assert process.wait(20) == 0  # a signal ends it cleanly
        hub.ledger.close()


def http(url: str, method: str = "GET", key: str | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, method=method, headers={"X-Api-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_fleet_page_shows_the_fleet_and_sends_and_cancels_prints(browser, fleet_hub, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    hub, jobs, url, hub_dir = fleet_hub
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    step = iter(range(1, 100))

    def shot(name: str, card: str | None = None) -> None:
        if card is not None:
            browser.execute_script("document.getElementById(arguments[0]).scrollIntoView()", card)
        browser.save_screenshot(str(ARTIFACTS / f"{next(step):02d}-{name}.png"))

    def text(css: str) -> str:  # read in one script: the page may replace a row between two selenium calls
        return browser.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
                                      css)

    def shows(css: str, pattern: str, what: str, timeout_s: float = 20.0) -> str:
        return wait_for(lambda: re.search(pattern, text(css)) and text(css), timeout_s=timeout_s, interval_s=0.1,
                        what=f"{what} ({css} showed {text(css)!r})")

    # no anonymous page, no anonymous API
    browser.get(url)
    assert browser.current_url.endswith("/login")
    assert "printnode hub web password" in text("main")
    assert http(url + "api/fleet")[0] == 401
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-button").click()
    shows("#live", "^live$", "the page reading the hub")

    # the nodes table: the printing job (not the cancelled one its document names), the real queue, volts, temps
    row = shows("tr[data-node-id='kenya-1']", r"shelf · printing 40 %", "kenya-1's current job")
    cells = browser.execute_script("return Object.fromEntries([...document.querySelectorAll("
                                   "\"tr[data-node-id='kenya-1'] td\")].map(td => [td.dataset.label, td.innerText]))")
    assert (cells["soc"], cells["battery"], cells["hotend"], cells["bed"], cells["queue"]) == (
        "15 %", "12.1 V", "205/205 °C", "60/60 °C", "3"), row
    assert browser.find_element(By.CSS_SELECTOR, "tr[data-node-id='kenya-2'] td.online").text == "no"
    # the alerts, each a sentence with its node and time
    kinds = browser.execute_script("return Object.fromEntries([...document.querySelectorAll('#alert-list li')]"
                                   ".map(li => [li.dataset.kind, li.innerText]))")
    assert set(kinds) == {"low_battery", "stalled", "offline", "thermal_fault"}, kinds
    assert kinds["offline"].startswith("kenya-2 has been offline since ") and "(10.0 h)" in kinds["offline"]
    assert kinds["stalled"].startswith("kenya-1's print shelf has not moved from 40 % since ")
    shot("nodes-and-alerts")

    # the map: each node at its longitude and latitude, on a graticule fitted to the fleet
    sites = {g.get_attribute("data-node-id"): g for g in browser.find_elements(By.CSS_SELECTOR, "#map g.site")}
    assert set(sites) == {"kenya-1", "kenya-2"}
    bounds = browser.execute_script("return Object.assign({}, document.getElementById('map').dataset)")
    west, east, south, north = (float(bounds[k]) for k in ("west", "east", "south", "north"))
    assert west < 34.768 < 36.817 < east and south < -1.286 < -0.092 < north
    width, height = (float(v) for v in browser.execute_script(
        "return document.getElementById('map').getAttribute('viewBox')").split()[2:])
    for node_id, lat, lon in (("kenya-1", -1.286, 36.817), ("kenya-2", -0.092, 34.768)):
        circle = sites[node_id].find_element(By.TAG_NAME, "circle")
        assert float(circle.get_attribute("cx")) == pytest.approx((lon - west) / (east - west) * width, abs=0.01)
        assert float(circle.get_attribute("cy")) == pytest.approx((north - lat) / (north - south) * height, abs=0.01)
    assert "alert" in sites["kenya-2"].get_attribute("class")  # offline with an alert: red
    labels = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#map text.grid-label")]
    assert any(label.endswith("°E") for label in labels) and any(label.endswith("°S") for label in labels)
    shot("map", "map-card")

    # the charts: a day of SoC over PV for the node that sent telemetry
    soc_line = "figure.chart[data-node-id='kenya-1'] polyline.soc"
    chart = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, soc_line), what="kenya-1's SoC chart")[0]
    assert len(chart.get_attribute("points").split()) > 100
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart[data-node-id='kenya-1'] path.pv")
    # an offline node's chart ends at its last sample (ten hours ago), not at an empty now
    assert len(browser.find_element(By.CSS_SELECTOR, "figure.chart[data-node-id='kenya-2'] polyline.soc")
               .get_attribute("points").split()) == 61
    shot("charts", "charts-card")

    # the jobs with their states and reasons; a job's history
    petg = text(f"tr[data-job-id='{jobs['petg']}']")
    assert "unassigned" in petg and "material PETG not loaded (PLA)" in petg
    assert "failed" in text(f"tr[data-job-id='{jobs['bracket']}']")
    browser.find_element(By.CSS_SELECTOR, f"tr[data-job-id='{jobs['shelf']}'] td.actions button.secondary").click()
    shows("tr.history", r"v2 · .* · waiting energy — waiting for the sun", "shelf's history with its reasons")
    shot("history", "jobs-card")

    # send a print to the best node, then one to kenya-2, and cancel it
    part = tmp_path / "files" / "shelf.gcode"
    browser.find_element(By.ID, "submit-file").send_keys(str(part))
    browser.find_element(By.ID, "submit-button").click()
    message = shows("#message", r"queued for the best node", "the answer to a fleet submit")
    best_id = re.search(r"Job (\w+) ", message).group(1)
    shot("sent-to-the-best-node", "message")
    Select(browser.find_element(By.ID, "submit-node")).select_by_value("kenya-2")
    browser.find_element(By.ID, "submit-file").send_keys(str(part))
    browser.find_element(By.ID, "submit-material").send_keys("PLA")
    browser.find_element(By.ID, "submit-button").click()
    named_id = re.search(r"Job (\w+) \(shelf\) queued for kenya-2", shows("#message", "queued for kenya-2",
                                                                          "the answer to a named submit")).group(1)
    queued = {j.job_id: j for j in fleet.list_jobs(hub.ledger)}
    assert queued[best_id].requested_node is None and queued[named_id].requested_node == "kenya-2"
    assert fleet.job_detail(hub.ledger, named_id).requirements["material"] == "PLA"
    shows(f"tr[data-job-id='{named_id}']", "for kenya-2", "the new job in the list")
    browser.find_element(By.CSS_SELECTOR, f"tr[data-job-id='{named_id}'] button.danger").click()
    browser.switch_to.alert.accept()
    shows("#message", rf"Job {named_id} is cancelled", "the cancel's sentence")
    shows(f"tr[data-job-id='{named_id}'] td.state", "^cancelled$", "the job cancelled in the list")
    assert fleet.job_detail(hub.ledger, named_id).wire_state == "CANCELED"

    # a report reaching the hub shows up on the page, and the stall alert goes
    progress(hub, "kenya-1", jobs["shelf"], 55.0, time.time())
    shows("tr[data-node-id='kenya-1'] td.job", r"printing 55 %", "the new progress", timeout_s=15)
    wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, "#alert-list li[data-kind='stalled']"),
             what="the stall alert gone")

    assert not [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    # control needs the page's CSRF token (or the API key)
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/api/fleet/jobs/{best_id}/cancel', {{method: 'POST', credentials: 'same-origin'}})"
        ".then(r => done(r.status));")
    assert status == 403
    key = subprocess.run([sys.executable, "-m", "node", "hub", "--dir", str(hub_dir), "web", "key"],
                         capture_output=True, text=True, timeout=60).stdout.strip()
    code, answer = http(f"{url}api/fleet/jobs/{best_id}/cancel", "POST", key)
    assert code == 200 and answer["message"] == f"Job {best_id} is cancelled (cancelled before assignment)."
    assert http(f"{url}api/fleet/jobs/{best_id}/cancel", "POST", key) == (
        409, {"error": f"job {best_id} is already CANCELED"})
    assert http(url + "api/fleet", key="0" * 32)[0] == 403

    # a phone: nothing wider than the screen but the tables, which scroll in their cards
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    page = browser.page_source
    assert "Traceback" not in page and "internal error" not in page
    shot("done", "nodes-card")
