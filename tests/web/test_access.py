"""[web] and its credentials: the file's rules, optional TLS, and a port that is taken (the node keeps
running and says why its page is missing)."""
from __future__ import annotations

import datetime
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.config import ConfigError, load_config
from node.web import credentials as creds
from node.web.view import local_time, start_words, zone
from tests.conftest import start_daemon, stop_daemon, wait_for
from tests.web.conftest import CURL, init_credentials

QUIET = ("jobs.queue_sample_when_empty=false", "planner.enabled=false")


def test_credentials_keep_a_hash_not_the_password_and_doctor_names_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "web-credentials.json"
    assert creds.problems(path) == [f"{path} does not exist: create it with `printnode web init`"]
    made, password = creds.create(path)
    assert password not in path.read_text() and made.api_key in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600 and creds.problems(path) == []
    loaded = creds.load(path)
    assert loaded.password_matches(password) and not loaded.password_matches(password + "x")
    assert loaded.key_matches(made.api_key)
    assert not loaded.key_matches(made.api_key.lower()) and not loaded.key_matches("")
    with pytest.raises(creds.CredentialsError, match="at least 8 characters"):
        creds.set_password(path, "short")
    assert creds.rotate_key(path).api_key != made.api_key
    path.chmod(0o644)
    assert "readable by others" in creds.problems(path)[0]
    path.write_text("{not json")
    assert "damaged" in creds.problems(path)[0]


def test_tls_needs_both_files() -> None:
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        load_config(None, ["web.tls_cert='/etc/printnode/web.crt'"], use_overrides=False)


def test_plan_times_are_local_with_the_zone_named() -> None:
    tz = zone("America/Phoenix")
    noon_utc = datetime.datetime(2026, 6, 21, 19, 0, tzinfo=datetime.UTC).timestamp()
    assert local_time(noon_utc, tz) == "12:00 MST"
    assert local_time(noon_utc + 86400, tz, noon_utc) == "tomorrow 12:00 MST"
    assert start_words(noon_utc - 30, tz, noon_utc) == "now"
    assert start_words(noon_utc + 3600, tz, noon_utc) == "today 13:00 MST"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "web.crt", directory / "web.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_with_a_certificate_and_a_taken_port_leaves_the_node_running(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    state = tmp_path / "tls"
    init_credentials(state)
    daemon = start_daemon(state, *QUIET, "web.port=0", "web.bind='127.0.0.1'", f"web.tls_cert='{cert}'",
                          f"web.tls_key='{key}'")
    try:
        url = wait_for(lambda: daemon.request({"cmd": "status"})["components"]["web"]["url"], what="the url")
        assert url.startswith("https://127.0.0.1:")
        api_key = daemon.cli("web", "key").stdout.strip()
        answer = subprocess.run([CURL, "-sS", "--cacert", str(cert), "-H", f"X-Api-Key: {api_key}",
                                 url + "api/version"], capture_output=True, text=True, timeout=30)
        assert answer.returncode == 0 and '"api"' in answer.stdout, answer.stderr
    finally:
        stop_daemon(daemon)

    with socket.socket() as taken:  # someone else has the port: the page is missing, the node is not
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        state = tmp_path / "taken"
        init_credentials(state)
        daemon = start_daemon(state, *QUIET, f"web.port={port}", "web.bind='127.0.0.1'")
        try:
            status = daemon.request({"cmd": "status"})
            problem = status["components"]["web"]["problem"]
            assert f"cannot listen on 127.0.0.1:{port}" in problem and problem in status["problems"]
            assert status["components"]["printer"]["state"] in ("connecting", "ready", "disconnected")
            doctor = daemon.cli("doctor")
            assert "web page not served" in doctor.stdout and "Traceback" not in doctor.stdout + doctor.stderr
        finally:
            assert stop_daemon(daemon) == 0


def test_a_page_login_survives_a_restart_of_the_web_component_and_ends_with_a_new_password(tmp_path: Path) -> None:
    """The real aiohttp component started, stopped and started again on the same credentials (what a
    daemon restart does to it), a real HTTP client, the CLI changing the password."""
    import asyncio
    import sys
    import urllib.error
    import urllib.parse
    import urllib.request

    from node.clock import ManualClock
    from node.node import Node, NodeSection
    from node.web.config import WebSection
    from node.web.server import WebServer
    from tests.web.conftest import PASSWORD, NoRedirect

    credentials = tmp_path / "web-credentials.json"
    creds.create(credentials, PASSWORD)
    node = Node(NodeSection(), ManualClock(1_800_000_000))

    def web_component() -> WebServer:
        return WebServer(node, WebSection(bind="127.0.0.1", port=0), control=None, runner=None,  # type: ignore[arg-type]
                         jobs=None, credentials_path=credentials, files_dir=tmp_path / "files",  # type: ignore[arg-type]
                         max_file_bytes=1 << 20, reserve_bytes=0, plan_snapshot=lambda: None, timezone="UTC",
                         printer_profile_name="ender3")

    def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        method = "GET" if data is None else "POST"
        request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as answer:
            return answer.code, dict(answer.headers), answer.read()

    async def scenario() -> None:
        first = web_component()
        await first.start()
        status, headers, _ = await asyncio.to_thread(
            http, first.url + "login", urllib.parse.urlencode({"password": PASSWORD}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 303 and headers["Location"] == "/", headers
        cookie = {"Cookie": headers["Set-Cookie"].split(";")[0]}
        token = cookie["Cookie"].split("=", 1)[1]
        status, _, body = await asyncio.to_thread(http, first.url + "api/node/session", None, cookie)
        assert status == 200
        csrf = __import__("json").loads(body)["csrf"]
        await first.stop()
        kept = (tmp_path / "web-credentials.sessions.json")
        assert token not in kept.read_text() and oct(kept.stat().st_mode & 0o777) == "0o600"  # a hash, not the token

        second = web_component()  # the daemon restarted
        await second.start()
        status, headers, body = await asyncio.to_thread(http, second.url + "api/node/session", None, cookie)
        assert status == 200 and __import__("json").loads(body)["csrf"] == csrf, body  # still logged in
        assert headers["Server"] == "printnode"
        # a second login, logged out: that one ends (and leaves the file), the first goes on
        status, headers, _ = await asyncio.to_thread(
            http, second.url + "login", urllib.parse.urlencode({"password": PASSWORD}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"})
        other = {"Cookie": headers["Set-Cookie"].split(";")[0]}
        _, _, body = await asyncio.to_thread(http, second.url + "api/node/session", None, other)
        status, headers, _ = await asyncio.to_thread(http, second.url + "logout", b"",
                                                     {**other, "X-CSRF-Token": __import__("json").loads(body)["csrf"]})
        assert status == 303 and headers["Location"] == "/login"
        assert (await asyncio.to_thread(http, second.url + "api/node/session", None, other))[0] == 401
        assert other["Cookie"].split("=", 1)[1] not in kept.read_text() and len(second.sessions) == 1
        assert (await asyncio.to_thread(http, second.url + "api/node/session", None, cookie))[0] == 200
        changed = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "node", "web", "password", "--stdin", "--state-dir", str(tmp_path)],
            input="another fine password\n", capture_output=True, text=True, timeout=60)
        assert changed.returncode == 0 and "must log in again" in changed.stdout, changed.stderr
        status, _, body = await asyncio.to_thread(http, second.url + "api/node/session", None, cookie)
        assert status == 401 and b"expired" in body  # the running component refuses the old login at once
        assert not kept.exists()  # and the CLI cleared the file
        await second.stop()

    asyncio.run(scenario())


def test_the_zeroconf_announcement_is_an_avahi_service_file_with_octoprints_txt_records(tmp_path: Path) -> None:
    """avahi-daemon is not run here (it needs the system D-Bus, and avahi-browse talks to it over
    D-Bus): the file is read back the way avahi reads one, by the rules of its service-file format."""
    import xml.etree.ElementTree as ET

    from node.web.announce import NothingToAnnounce, avahi_service_xml
    from node.web.compat import API_VERSION, SERVER_VERSION
    from node.web.config import WebSection

    written = tmp_path / "printnode.service"
    result = subprocess.run([__import__("sys").executable, "-m", "node", "web", "announce", "--write", str(written),
                             "--set", "web.port=8123", "--set", "node.id=workshop-1", "--state-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "port 8123" in result.stdout, result.stderr
    text = written.read_text()
    assert text.startswith('<?xml version="1.0" standalone="no"?>\n<!DOCTYPE service-group SYSTEM "avahi-service.dtd">')
    assert oct(written.stat().st_mode & 0o777) == "0o644"  # avahi-daemon runs as its own user
    group = ET.fromstring(text)
    assert group.tag == "service-group" and [child.tag for child in group] == ["name", "service", "service"]
    assert group.find("name").get("replace-wildcards") == "yes" and "workshop-1 on %h" in group.find("name").text
    services = {}
    for service in group.findall("service"):
        tags = [child.tag for child in service]  # avahi's order: type, then port, then the TXT records
        assert tags[:2] == ["type", "port"] and set(tags[2:]) == {"txt-record"}, tags
        assert service.find("port").text == "8123"
        records = [r.text for r in service.findall("txt-record")]
        assert all(len(r.encode()) <= 255 and r.count("=") >= 1 for r in records)  # one DNS TXT string each
        services[service.find("type").text] = dict(r.split("=", 1) for r in records)
    # what OctoPrint's discovery plugin publishes, and what GET /api/version answers
    assert services["_octoprint._tcp"] == {"path": "/", "api": API_VERSION, "version": SERVER_VERSION,
                                           "model": "Solar Print Node", "vendor": "printnode"}
    assert services["_http._tcp"] == {"path": "/"}

    https = ET.fromstring(avahi_service_xml(WebSection(port=443, tls_cert=Path("c"), tls_key=Path("k")), "n"))
    assert [s.find("type").text for s in https.findall("service")] == ["_octoprint._tcp", "_https._tcp"]
    for config, words in ((WebSection(bind="127.0.0.1"), "this machine only"), (WebSection(port=0), "fixed port"),
                          (WebSection(enabled=False), "off")):
        with pytest.raises(NothingToAnnounce, match=words):
            avahi_service_xml(config, "n")
    refused = subprocess.run([__import__("sys").executable, "-m", "node", "web", "announce", "--set",
                              "web.bind='127.0.0.1'", "--state-dir", str(tmp_path)], capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 1 and "this machine only" in refused.stderr and "Traceback" not in refused.stderr
