"""The HTTP API of a running daemon, through real clients: curl uploading the way PrusaSlicer does,
urllib for the JSON routes; access (401/403 as JSON, never a page), CSRF, and the one gate."""
from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.control import Request
from node.web.api import CONTROL_ROUTES
from tests.conftest import stop_daemon, wait_for
from tests.web.conftest import PASSWORD, WebNode, moves_file, start_web_node

# sunny noon, a quick clock, nothing queued by itself, the plate confirmed by the simulation
SETS = ("jobs.queue_sample_when_empty=false", "clock.time_scale=60")


@pytest.fixture(scope="module")
def web_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    node = start_web_node(tmp_path_factory.mktemp("web") / "state", *SETS)
    yield node
    stop_daemon(node.daemon)


def job_state(node: WebNode, job_id: str) -> str:
    return node.call("GET", f"/api/node/jobs/{job_id}").json()["job"]["state"]


def parked(node: WebNode) -> None:
    """The printer has parked (the OctoPrint state follows the printer's)."""
    wait_for(lambda: node.call("GET", "/api/node/status").json()["components"]["printer"]["state"] == "paused",
             what="the printer parked")


def settle(node: WebNode) -> None:
    """Nothing left on the printer or in the queue from an earlier test."""
    for job in node.call("GET", "/api/node/jobs").json():
        if job["state"] not in ("rejected", "completed", "cancelled"):
            node.call("POST", f"/api/node/jobs/{job['id']}/cancel")
    wait_for(lambda: node.call("GET", "/api/node/status").json()["components"]["runner"]["current_job"] is None,
             what="the printer free")


PROTECTED = [("GET", "/"), ("GET", "/api/version"), ("GET", "/api/printer"), ("GET", "/api/job"),
             ("POST", "/api/job"), ("POST", "/api/files/local"), ("GET", "/api/files/local"),
             ("GET", "/api/settings"), ("GET", "/api/node/events"), ("GET", "/api/node/page"),
             ("POST", "/logout")] + [(method, path.replace("{job}", "abc")) for method, path in CONTROL_ROUTES.values()]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_key_gets_401_and_a_wrong_key_403_as_json_never_a_page(web_node: WebNode, method: str, path: str) -> None:
    for key, status in ((None, 401), ("0123456789ABCDEF0123456789ABCDEF", 403)):
        answer = web_node.call(method, path, key=key, headers={"Accept": "application/json"})
        if path == "/" and key is None:  # a browser without a login is sent to the login page
            assert answer.status == 303 and answer.headers["Location"] == "/login"
            continue
        assert answer.status == status, (method, path, key, answer.body)
        assert answer.headers["Content-Type"].startswith("application/json")
        assert answer.json()["error"] and b"<html" not in answer.body.lower() and b"Traceback" not in answer.body


def test_prusaslicer_checks_the_version_then_uploads_and_prints_when_the_plan_allows(web_node: WebNode,
                                                                                     tmp_path: Path) -> None:
    settle(web_node)
    version = web_node.call("GET", "/api/version", headers={"User-Agent": "PrusaSlicer/2.8.1"})
    assert version.status == 200
    assert "api" in version.json() and version.json()["text"].startswith("OctoPrint")  # what PrusaSlicer checks
    answer = web_node.curl_upload(moves_file(tmp_path / "part.gcode", 30), {"print": "true", "path": ""})
    assert answer.status == 201, answer.body
    reply = answer.json()
    assert reply["done"] is True and reply["effectivePrint"] is True and reply["files"]["local"]["name"] == "part.gcode"
    news = reply["printnode"]
    assert news["queued"] is True and news["state"] == "queued"
    assert re.fullmatch(r"queued to print when the energy plan allows: expected to start (now|today \d\d:\d\d MST) "
                        r"\((starts now: )?needs \d+ Wh.*\)", news["when"]), news["when"]
    listed = {j["id"]: j for j in web_node.call("GET", "/api/node/jobs?all=1").json()}
    assert listed[news["job_id"]]["source"] == "web" and listed[news["job_id"]]["name"] == "part.gcode"
    wait_for(lambda: job_state(web_node, news["job_id"]) == "completed", timeout_s=60, what="the upload printed")


def test_an_upload_with_a_forbidden_command_is_refused_at_the_gate_naming_its_line(web_node: WebNode,
                                                                                 tmp_path: Path) -> None:
    bad = tmp_path / "bad.gcode"
    bad.write_text("G28\nG1 X10\nM502 ; factory reset\nG1 X0\n")
    answer = web_node.curl_upload(bad, {"print": "true", "path": ""})
    assert answer.status == 400
    error = answer.json()["error"]
    assert "safety gate" in error and "line 3" in error and "M502" in error
    job = web_node.call("GET", f"/api/node/jobs/{answer.json()['printnode']['job_id']}").json()["job"]
    assert job["state"] == "rejected"


def test_upload_without_print_is_kept_until_started(web_node: WebNode, tmp_path: Path) -> None:
    settle(web_node)
    before = {j["id"] for j in web_node.call("GET", "/api/node/jobs?all=1").json()}
    answer = web_node.curl_upload(moves_file(tmp_path / "later.gcode", 10), {"print": "false", "select": "true",
                                                                             "path": ""})
    assert answer.status == 201 and answer.json()["printnode"]["queued"] is False
    assert {j["id"] for j in web_node.call("GET", "/api/node/jobs?all=1").json()} == before
    names = [f["name"] for f in web_node.call("GET", "/api/files/local").json()["files"]]
    assert "later.gcode" in names
    assert web_node.call("GET", "/api/node/page").json()["uploaded"] == ["later.gcode"]
    started = web_node.call("POST", "/api/job", {"command": "start"})
    assert started.status == 204, started.body  # as OctoPrint answers; the job and when it prints in headers
    job_id = started.headers["X-Printnode-Job"]
    assert "energy plan" in started.headers["X-Printnode-When"] or "queued" in started.headers["X-Printnode-When"]
    assert job_state(web_node, job_id) in ("queued", "waiting_energy", "printing", "completed")
    assert web_node.call("GET", "/api/node/page").json()["uploaded"] == []
    nothing = web_node.call("POST", "/api/job", {"command": "start"})
    assert nothing.status == 409 and "no file is selected" in nothing.json()["error"]
    wait_for(lambda: job_state(web_node, job_id) == "completed", timeout_s=60, what="the started upload printed")


def test_api_job_and_printer_follow_a_print_through_pause_resume_and_cancel(web_node: WebNode, tmp_path: Path) -> None:
    settle(web_node)
    answer = web_node.curl_upload(moves_file(tmp_path / "long.gcode", 6000), {"print": "true", "path": ""})
    job_id = answer.json()["printnode"]["job_id"]
    wait_for(lambda: web_node.call("GET", "/api/job").json()["state"] == "Printing", what="printing")
    job = web_node.call("GET", "/api/job").json()
    assert job["job"]["file"]["name"] == "long.gcode" and job["printnode"]["job_id"] == job_id
    wait_for(lambda: (web_node.call("GET", "/api/job").json()["progress"]["completion"] or 0) > 0, what="progress")
    printer = web_node.call("GET", "/api/printer").json()
    assert printer["state"]["flags"]["printing"] is True and "tool0" in printer["temperature"]
    assert web_node.call("POST", "/api/job", {"command": "pause", "action": "pause"}).status == 204
    assert web_node.call("GET", "/api/job").json()["state"] == "Paused"
    assert job_state(web_node, job_id) == "paused"
    parked(web_node)
    assert web_node.call("POST", "/api/job", {"command": "pause", "action": "resume"}).status == 204
    assert job_state(web_node, job_id) == "printing"
    assert web_node.call("POST", "/api/job", {"command": "cancel"}).status == 204
    wait_for(lambda: job_state(web_node, job_id) == "cancelled", what="cancelled")
    refused = web_node.call("POST", "/api/job", {"command": "restart"})
    assert refused.status == 409 and "not supported" in refused.json()["error"]


def test_every_control_command_has_an_http_route_that_does_it(web_node: WebNode, tmp_path: Path) -> None:
    commands = {typing.get_args(model.model_fields["cmd"].annotation)[0] for model in
                typing.get_args(typing.get_args(Request)[0])}
    commands |= {"pause", "resume", "cancel"}
    assert commands == set(CONTROL_ROUTES), "a control command without an HTTP route (or a route for none)"
    settle(web_node)
    status = web_node.call("GET", "/api/node/status").json()
    assert status["node_id"] and "web" in status["components"]
    added = web_node.curl_upload(moves_file(tmp_path / "api.gcode", 6000), {"priority": "5"}, url_path="/api/node/jobs")
    assert added.status == 201, added.body
    job_id = added.json()["job"]["id"]
    assert added.json()["job"]["priority"] == 5 and "expected to start" in added.json()["when"]
    assert job_id in [j["id"] for j in web_node.call("GET", "/api/node/jobs").json()]
    wait_for(lambda: job_state(web_node, job_id) == "printing", what="printing")
    paused = web_node.call("POST", f"/api/node/jobs/{job_id}/pause")
    assert paused.status == 200 and paused.json()["state"] == "paused", paused.body
    # resumed at once, whether or not the printer has parked yet (a late park report is the node's own
    # pause, not the firmware's: tests/test_runner_pauses.py makes that race happen every time)
    resumed = web_node.call("POST", f"/api/node/jobs/{job_id}/resume")
    assert resumed.status == 200 and resumed.json()["state"] == "printing", resumed.body
    assert web_node.call("POST", "/api/node/cancel").json()["state"] == "cancelled"  # the current job
    shown = web_node.call("GET", f"/api/node/jobs/{job_id[:8]}").json()
    steps = [(h["to_state"], h["pause_reason"], h["reason"]) for h in shown["history"]]
    assert [step[0] for step in steps][-4:] == ["printing", "paused", "printing", "cancelled"], steps
    assert [step[1] for step in steps if step[0] == "paused"] == ["user"], steps  # no "the printer asked"
    assert "summary" in web_node.call("GET", "/api/node/plan").json()
    saved = web_node.call("POST", "/api/node/config", {"assignment": "analysis.ambient_c=25"})
    assert saved.status == 200 and saved.json()["restart_required"] is True
    refused = web_node.call("POST", "/api/node/config", {"assignment": "node.id=other"})
    assert refused.status == 400 and "cannot be set at run time" in refused.json()["error"]
    wait_for(lambda: web_node.call("GET", "/api/node/status").json()["components"]["runner"]["current_job"] is None,
             what="the printer free")
    assert web_node.call("POST", "/api/node/plate-cleared").json() == {"plate_clear": True}
    missing = web_node.call("GET", "/api/node/jobs/nosuchjob")
    assert missing.status == 404 and "no job" in missing.json()["error"]


def test_the_page_logs_in_with_the_password_and_needs_its_csrf_token(web_node: WebNode) -> None:
    same_origin = {"Origin": web_node.url.rstrip("/"), "Content-Type": "application/x-www-form-urlencoded"}

    def login(password: str, headers: dict[str, str] = same_origin) -> tuple[int, str, str]:
        import urllib.request

        from tests.web.conftest import NoRedirect
        request = urllib.request.Request(web_node.url + "login", method="POST", headers=headers,
                                         data=urllib.parse.urlencode({"password": password}).encode())
        try:
            urllib.request.build_opener(NoRedirect).open(request, timeout=10)
        except urllib.error.HTTPError as answer:
            return answer.code, answer.headers.get("Location", ""), answer.headers.get("Set-Cookie", "")
        raise AssertionError("a login answers with a redirect")

    status, where, cookie = login(PASSWORD, {**same_origin, "Origin": "http://evil.example"})
    assert (status, where, cookie) == (303, "/login?error=origin", "")
    status, where, cookie = login(PASSWORD)
    assert status == 303 and where == "/" and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = {"Cookie": cookie.split(";")[0]}
    page = web_node.call("GET", "/", key=None, headers=session)
    assert page.status == 200 and b"Solar Print Node" in page.body
    csrf = web_node.call("GET", "/api/node/session", key=None, headers=session).json()["csrf"]
    forged = web_node.call("POST", "/api/node/plate-cleared", key=None, headers=session)
    assert forged.status == 403 and "CSRF" in forged.json()["error"]
    allowed = web_node.call("POST", "/api/node/plate-cleared", key=None, headers={**session, "X-CSRF-Token": csrf})
    assert allowed.status in (200, 409), allowed.body  # 409: a print is on the plate
    for _ in range(5):
        assert login("wrong password")[1] == "/login?error=wrong"
    assert login(PASSWORD)[1].startswith("/login?error=wait")  # five wrong tries: this address waits


def test_a_rotated_key_acts_at_once_and_doctor_checks_the_credentials(web_node: WebNode) -> None:
    old = web_node.key
    rotated = web_node.daemon.cli("web", "key", "--rotate")
    web_node.forget_key()
    assert rotated.returncode == 0 and rotated.stdout.strip() == web_node.key != old
    assert web_node.call("GET", "/api/version", key=old).status == 403
    assert web_node.call("GET", "/api/version").status == 200
    doctor = web_node.daemon.cli("doctor", "--json")
    web_check = next(c for c in __import__("json").loads(doctor.stdout) if c["name"] == "web")
    assert web_check["level"] == "ok" and web_node.url in web_check["detail"]


def test_a_body_read_whole_is_capped_and_said_so(web_node: WebNode) -> None:
    answer = web_node.call("POST", "/api/node/config", {"assignment": "analysis.ambient_c=" + "2" * 200_000})
    assert answer.status == 413 and "too large" in answer.json()["error"]
    assert web_node.call("GET", "/api/version").status == 200  # and the node serves on


def test_a_waiting_job_moves_in_the_queue_from_the_api_and_the_cli_but_not_the_one_printing(web_node: WebNode,
                                                                                           tmp_path: Path) -> None:
    settle(web_node)
    ids = []
    for name, moves in (("first", 6000), ("second", 10), ("third", 10)):  # queued as the CLI does: quicker
        path = moves_file(tmp_path / f"{name}.gcode", moves)
        ids.append(web_node.daemon.request({"cmd": "queue_add", "name": path.name,
                                            "size_bytes": path.stat().st_size}, path)["id"])
        if name == "first":
            wait_for(lambda: job_state(web_node, ids[0]) == "printing", what="the first printing")
    first, second, third = ids

    def waiting() -> list[str]:
        return [j["id"] for j in web_node.call("GET", "/api/node/jobs").json()
                if j["state"] in ("queued", "waiting_plate", "waiting_energy")]

    assert waiting() == [second, third]
    refused = web_node.call("POST", f"/api/node/jobs/{first}/move", {"to": 1})
    assert refused.status == 409 and "is printing: only a waiting job can be moved" in refused.json()["error"]
    moved = web_node.call("POST", f"/api/node/jobs/{third}/move", {"by": -1})
    assert moved.status == 200 and moved.json()["id"] == third, moved.body
    assert moved.headers["Server"] == "printnode"  # aiohttp's name and version are not on show
    assert waiting() == [third, second]
    shown = web_node.daemon.cli("queue", "move", second[:8], "--top")
    assert shown.returncode == 0 and "1 of 2 waiting" in shown.stdout, shown.stderr
    assert waiting() == [second, third]
    for body, words in (({"to": 1, "by": 1}, "exactly one of"), ({"to": 0}, "to: Input should be greater"),
                        ({"place": 1}, "unknown field(s) place")):
        bad = web_node.call("POST", f"/api/node/jobs/{third}/move", body)
        assert bad.status == 400 and words in bad.json()["error"], bad.body



def test_a_pypi_octoprint_client_uploads_selects_and_starts_a_job_that_prints_when_the_plan_allows(
        web_node: WebNode, tmp_path: Path) -> None:
    import subprocess

    from tests.web.conftest import octoprint_cli_executable

    settle(web_node)
    tool = octoprint_cli_executable()
    config = tmp_path / "octoprint-cli.ini"  # its own config file; no update check (no GitHub from a test)
    config.write_text(f"[server]\nServerAddress = {web_node.url}\nApiKey = {web_node.key}\n\n"
                      "[preferences]\nUpdateCheck = false\nFormattedText = false\n")

    def client(*args: str) -> str:
        done = subprocess.run([str(tool), "-c", str(config), *args], capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    part = moves_file(tmp_path / "cli.gcode", 30)
    # every call first checks /api/version (a dict) and the key (GET /api/job): both pass, or it stops
    assert "File uploaded to OctoPrint" in client("files", "upload", part.name)
    assert "cli.gcode has been loaded" in client("print", "select", "cli.gcode")
    assert "Starting print" in client("print", "start")  # OctoPrint's 204: the job is queued for the plan
    job = web_node.call("GET", "/api/job").json()["printnode"]
    assert job["state"] in ("queued", "waiting_energy", "printing", "completed"), job
    wait_for(lambda: job_state(web_node, job["job_id"]) == "completed", timeout_s=60, what="the client's job printed")
