"""What the web page costs the daemon in memory: steady RSS with [web] on vs off, under `make run`.

    .venv/bin/python bench/web.py [--minutes 10] [--calls 100]

Two daemons run side by side with the Makefile's RUN_ARGS (the simulated day of `make run`, each in
its own temporary state directory): one with ``web.enabled=false``, one serving its page on a free
loopback port.  On the second, the distribution's headless Chromium (selenium, the system
chromedriver) logs in and keeps the page open with its live updates connected for the whole run,
and ``--calls`` API calls are spread over it (the OctoPrint routes a slicer polls, the JSON API, two
uploads; the other daemon gets the same two files through its control socket).  The daemons' own
RSS (VmRSS of the daemon process, not of its simulator children) is sampled every 5 s; "steady" is
the median of the second half.  Prints one JSON line; exits 1 if the page went dark or the
difference is over the issue's budget (8 MB).
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.controlclient import ControlClient  # noqa: E402

BUDGET_MB = 8.0
PASSWORD = "bench password"
READS = ["/api/version", "/api/job", "/api/printer", "/api/node/status", "/api/node/jobs", "/api/node/plan",
         "/api/files/local", "/api/node/page", "/api/settings", "/api/connection"]


def run_args() -> list[str]:
    """The Makefile's RUN_ARGS, so the bench runs exactly `make run`'s day."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^RUN_ARGS \?= ((?:.*\\\n)*.*)$", text, re.M)
    assert match, "RUN_ARGS not found in the Makefile"
    return shlex.split(match.group(1).replace("\\\n", " "))


def start(state: Path, sets: list[str]) -> tuple[subprocess.Popen[bytes], ControlClient]:
    log = (state.parent / f"{state.name}.log").open("ab")
    process = subprocess.Popen([sys.executable, "-m", "node", "run", "--state-dir", str(state), *run_args(),
                                *[arg for item in sets for arg in ("--set", item)]],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    client = ControlClient(state / "control.sock", timeout_s=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}; see {log.name}")
        try:
            client.request({"cmd": "status"})
            return process, client
        except Exception:
            time.sleep(0.2)
    raise RuntimeError("daemon did not come up")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=412,915"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def gcode(path: Path, moves: int) -> Path:
    lines = ["G28", "G90", "G1 X0 Y0 F600"] + [f"G1 X{10 * ((i + 1) % 2)} Y{i * 0.01:.2f}" for i in range(moves)]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        base = Path(tmp)
        (base / "on").mkdir()
        subprocess.run([sys.executable, "-m", "node", "web", "init", "--password-stdin", "--state-dir",
                        str(base / "on")], input=PASSWORD + "\n", text=True, check=True, capture_output=True)
        off, off_client = start(base / "off", ["web.enabled=false"])
        on, on_client = start(base / "on", ["web.port=0", "web.bind='127.0.0.1'"])
        driver = None
        try:
            url = on_client.request({"cmd": "status"})["components"]["web"]["url"]  # type: ignore[index]
            key = subprocess.run([sys.executable, "-m", "node", "web", "key", "--state-dir", str(base / "on")],
                                 capture_output=True, text=True, check=True).stdout.strip()
            driver = browser()
            driver.get(url)
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            driver.find_element(By.ID, "login-button").click()
            deadline = time.monotonic() + 30
            while driver.find_element(By.ID, "live").text != "live":
                if time.monotonic() > deadline:
                    raise RuntimeError("the page did not connect its live updates")
                time.sleep(0.2)
            files = [gcode(base / f"bench-{i}.gcode", 600) for i in range(2)]
            duration_s = args.minutes * 60
            call_every_s = duration_s / max(1, args.calls)
            samples: list[tuple[float, float, float]] = []
            t0 = time.monotonic()
            next_sample = next_call = t0
            calls = failures = 0
            clocks: set[str] = set()
            while (now := time.monotonic()) - t0 < duration_s:
                if now >= next_sample:
                    samples.append((now - t0, rss_mb(off.pid), rss_mb(on.pid)))
                    clocks.add(driver.find_element(By.ID, "clock").text)
                    next_sample += 5.0
                if now >= next_call and calls < args.calls:
                    if calls in (args.calls // 4, args.calls // 2):  # two uploads, the same files to both daemons
                        path = files[0 if calls == args.calls // 4 else 1]
                        result = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                                 "-H", f"X-Api-Key: {key}", "-F", "print=true", "-F", "path=",
                                                 "-F", f"file=@{path}", url + "api/files/local"],
                                                capture_output=True, text=True, timeout=60)
                        failures += result.stdout != "201"
                        off_client.request({"cmd": "queue_add", "name": path.name,
                                            "size_bytes": path.stat().st_size}, path)
                    else:
                        request = urllib.request.Request(url.rstrip("/") + READS[calls % len(READS)],
                                                         headers={"X-Api-Key": key})
                        try:
                            with urllib.request.urlopen(request, timeout=30) as response:
                                response.read()
                        except Exception:
                            failures += 1
                    calls += 1
                    next_call += call_every_s
                time.sleep(0.2)
            live = driver.find_element(By.ID, "live").text == "live"
            web_status = on_client.request({"cmd": "status"})["components"]["web"]  # type: ignore[index]
        finally:
            if driver is not None:
                driver.quit()
            for process in (off, on):
                process.send_signal(signal.SIGTERM)
            for process in (off, on):
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
    steady = [s for s in samples if s[0] >= duration_s / 2]
    off_mb = statistics.median(s[1] for s in steady)
    on_mb = statistics.median(s[2] for s in steady)
    result = {"bench": "web", "minutes": args.minutes, "api_calls": calls, "api_failures": failures,
              "page_live_at_end": live, "page_clock_values_seen": len(clocks),
              "rss_off_mb": round(off_mb, 1), "rss_on_mb": round(on_mb, 1), "rss_delta_mb": round(on_mb - off_mb, 1),
              "rss_off_max_mb": round(max(s[1] for s in samples), 1),
              "rss_on_max_mb": round(max(s[2] for s in samples), 1),
              "budget_mb": BUDGET_MB, "web_status": web_status}
    print(json.dumps(result))
    return 0 if live and failures == 0 and on_mb - off_mb <= BUDGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
