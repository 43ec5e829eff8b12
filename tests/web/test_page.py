"""The page in a real browser: the distribution's headless Chromium driven by selenium through the
system chromedriver (nothing downloaded at run time), on a phone-sized window, against a running
daemon at dawn (virtual printer, simulated sun): log in, upload a real G-code file, see it wait for
the sun with its reason and expected start, see it print with its progress moving, pause, resume,
move a waiting job up the queue, press "Plate cleared". Screenshots of every step go to
test-artifacts/web/ (kept by the run).
"""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import stop_daemon, wait_for
from tests.web.conftest import PASSWORD, WebNode, moves_file, start_web_node

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("PRINTNODE_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")) / "web"
#: 03:30 MST on midsummer day, make run's small bank a third full: the job waits for the sun (until about
#: 07:00: 40 s here, time for a loaded machine to log in and upload); 300 node seconds a second
DAWN = ("clock.start='2026-06-21T10:30:00+00:00'", "clock.time_scale=300", "jobs.queue_sample_when_empty=false",
        "jobs.auto_plate_clear=false", "telemetry.simulated.initial_soc=0.33", "battery.capacity_ah=40")

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason="needs the distribution's chromium and chromium-driver "
                                       "(scripts/ensure-system-deps.sh test installs them)")


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=412,915", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def dawn_node(tmp_path: Path) -> Iterator[WebNode]:
    node = start_web_node(tmp_path / "state", *DAWN)
    yield node
    stop_daemon(node.daemon)


def test_the_page_shows_the_day_and_runs_a_print_from_upload_to_plate_cleared(browser, dawn_node: WebNode,
                                                                              tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    step = iter(range(1, 100))

    def shot(name: str, card: str | None = None) -> None:
        if card is not None:
            browser.execute_script("document.getElementById(arguments[0]).scrollIntoView()", card)
        browser.save_screenshot(str(ARTIFACTS / f"{next(step):02d}-{name}.png"))

    def text(element_id: str) -> str:
        """The element's text; "" while the page that has it is still loading (just after the login)."""
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

        try:
            return browser.find_element(By.ID, element_id).text
        except (NoSuchElementException, StaleElementReferenceException):
            return ""

    def shows(element_id: str, pattern: str, what: str, timeout_s: float = 60.0) -> str:
        return wait_for(lambda: re.search(pattern, text(element_id)) and text(element_id), timeout_s=timeout_s,
                        interval_s=0.2, what=f"{what} (#{element_id} showed {text(element_id)!r})")

    def press(label: str, within: str) -> None:
        buttons = [b for b in browser.find_element(By.ID, within).find_elements(By.TAG_NAME, "button")
                   if b.text == label]
        assert buttons, f"no {label!r} button in #{within}: {text(within)!r}"
        buttons[0].click()  # the page keeps a button in place while what it acts on is unchanged

    browser.get(dawn_node.url)
    assert browser.current_url.endswith("/login")  # no anonymous page
    browser.find_element(By.ID, "password").send_keys("not the password")
    browser.find_element(By.ID, "login-button").click()
    shows("login-message", "Wrong password", "the refusal in words")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-button").click()
    shows("live", "^live$", "live updates connected")
    shows("clock", r"\d\d:\d\d MST", "local time with its zone")
    shows("battery", r"\d+ % charged", "the battery")
    shot("logged-in")

    part = moves_file(tmp_path / "bracket.gcode", 3000)
    browser.find_element(By.ID, "file-input").send_keys(str(part))
    message = shows("message", "bracket.gcode: queued", "the upload's answer")
    # the plan's answer with its energy reason (on a machine so loaded that the sun came first: "now"; so
    # loaded that analysis and re-plan took longer than the reply waits, 5 s: it says so, the queue says when)
    assert re.search(r"expected to start (today \d\d:\d\d MST|now) \((starts now: )?needs \d+ Wh", message) \
        or re.search(r"queued to print when the energy plan allows; now: energy: not planned yet", message), message
    queue = shows("jobs", r"bracket\.gcode", "the job in the queue")
    shows("jobs", r"expected to start (today \d\d:\d\d MST|now) \((starts now: )?needs \d+ Wh",
          "when it starts and why then")
    shot("queued-waiting-for-the-sun", "queue-card")
    assert "bracket.gcode" in queue

    shows("current", r"printing · \d+\.\d %", "the print started when the plan allowed", timeout_s=150)
    first = float(re.search(r"(\d+\.\d) %", text("current")).group(1))
    shot("printing", "job-card")
    press("Pause", "current-buttons")
    shows("current", r"paused \(by a person\)", "paused by a person")
    wait_for(lambda: dawn_node.call("GET", "/api/node/status").json()["components"]["printer"]["state"] == "paused",
             what="the printer parked")
    shot("paused", "job-card")
    press("Resume", "current-buttons")
    shows("current", "printing", "printing again")
    wait_for(lambda: float((re.search(r"(\d+\.\d) %", text("current")) or [0, "0"])[1]) > first + 1,
             interval_s=0.2, what="progress moving")
    shot("resumed", "job-card")

    # two more files while it prints (queued from the CLI's socket: the page's upload is shown above): they
    # wait in the order they came; the last one's "Up" button puts it first (buttons, not dragging: a
    # thumb on a phone presses them the same)
    for name in ("second", "third"):
        path = moves_file(tmp_path / f"{name}.gcode", 20)
        dawn_node.daemon.request({"cmd": "queue_add", "name": path.name, "size_bytes": path.stat().st_size}, path)
    shows("jobs", r"second\.gcode[\s\S]*third\.gcode", "both waiting, in the order they came")

    def waiting_item(name: str) -> object:
        return next(li for li in browser.find_elements(By.CSS_SELECTOR, "#jobs li") if li.text.startswith(name))

    assert waiting_item("second.gcode").find_element(By.CSS_SELECTOR, "button.move-up").get_attribute("disabled")
    waiting_item("third.gcode").find_element(By.CSS_SELECTOR, "button.move-up").click()
    shows("message", r"third\.gcode moved up", "the move's answer")
    shows("jobs", r"third\.gcode[\s\S]*second\.gcode", "third now first")
    shot("moved-up", "queue-card")
    for job in dawn_node.call("GET", "/api/node/jobs").json():
        if job["name"] in ("second.gcode", "third.gcode"):
            dawn_node.call("POST", f"/api/node/jobs/{job['id']}/cancel")

    shows("current", "^Nothing is printing.$", "the print finished", timeout_s=150)
    shows("plate", "occupied", "the plate occupied by the finished print")
    shows("history", r"bracket\.gcode\s+completed", "the print in the history")
    shot("plate-occupied", "plate-card")
    press("Plate cleared", "plate-card")
    shows("plate", "^clear$", "the plate clear")
    shows("message", "the plate is clear", "the thanks")
    shot("plate-cleared", "plan-card")
    page = browser.page_source
    assert "Traceback" not in page and "internal error" not in page
    assert not [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
