"""Helpers of the sync tests: a real Mosquitto on a free loopback port, hubs and nodes around it.

``mosquitto`` starts the broker binary (PATH or /usr/sbin) with its own config file in tmp_path;
``Broker.kill()`` (SIGKILL: loses what it had not autosaved, as a power cut does), ``Broker.start()``
again on the same port.  ``tls_broker`` adds a throwaway CA, server certificate, per-node client
certificates (CN = node id, ``use_identity_as_username``) and the per-node ACL pattern file from
``docs/protocol.md``.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node.clock import Clock
from node.config import NodeConfig
from node.daemon import make_gate, node_site
from node.hub.certs import issue_cert, make_ca, write_pair
from node.hub.server import Hub
from node.jobs import Jobs
from node.node import Node
from node.printer.profile import load_profile
from node.store import Store
from node.sync.client import Sync
from node.sync.mqtt import BrokerSettings
from node.sync.signing import SigningKey

ACL_PATTERNS = """\
pattern read printnode/v1/%u/down/#
pattern write printnode/v1/%u/up/#
pattern readwrite printnode/v1/%u/state/#
pattern write homeassistant/+/%u/+/config
user hub
topic readwrite printnode/v1/#
topic readwrite homeassistant/#
"""


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if found is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TlsFiles:
    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    def client(self, name: str) -> tuple[Path, Path]:
        """(cert, key) of a client certificate with CN = ``name``."""
        key_pem, cert_pem = issue_cert(self.ca_key.read_bytes(), self.ca_cert.read_bytes(), name)
        key, cert = write_pair(self.dir, f"client-{name}", key_pem, cert_pem)
        return cert, key


@dataclass
class Broker:
    workdir: Path
    port: int
    tls: TlsFiles | None = None
    acl: bool = False
    #: False: the broker keeps nothing across a restart (no sessions, no retained or queued messages),
    #: the realistic case for a broker restarted from scratch or on a wiped SD card
    persistence: bool = True
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra: list[str] = field(default_factory=list)

    host = "127.0.0.1"

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def write_config(self) -> None:
        lines = [f"listener {self.port} {self.host}", "set_tcp_nodelay true",
                 f"log_dest file {self.workdir / 'mosquitto.log'}", "log_type error", "log_type warning",
                 "log_type notice", "log_type information", "max_queued_messages 10000"]
        lines += ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 1"] \
            if self.persistence else ["persistence false"]
        if os.geteuid() == 0:  # as root mosquitto would switch to user "mosquitto", who cannot read tmp_path
            lines.append("user root")
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca_cert}", f"certfile {self.tls.server_cert}",
                      f"keyfile {self.tls.server_key}", "require_certificate true", "use_identity_as_username true",
                      "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if self.acl:
            acl_path = self.workdir / "acl"
            acl_path.write_text(ACL_PATTERNS)
            lines.append(f"acl_file {acl_path}")
        lines += self.extra
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.write_config()
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.config_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.starts += 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening within 10 s")

    def kill(self) -> None:
        """SIGKILL: the broker loses whatever it had not autosaved, as on a power cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, kill: bool = True) -> None:
        self.kill() if kill else self.stop()
        self.start()

    def settings(self, client_id: str, *, cert_for: str | None = None, protocol: str = "5") -> BrokerSettings:
        s = BrokerSettings(host=self.host, port=self.port, client_id=client_id, protocol=protocol,
                           reconnect_min_s=1, reconnect_max_s=2)
        if self.tls is not None:
            cert, key = self.tls.client(cert_for or client_id)
            s.ca_file, s.cert_file, s.key_file, s.tls = self.tls.ca_cert, cert, key, True
        return s


def make_tls(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key_pem, ca_cert_pem = make_ca()
    ca_key, ca_cert = write_pair(directory, "ca", ca_key_pem, ca_cert_pem)
    key_pem, cert_pem = issue_cert(ca_key_pem, ca_cert_pem, "localhost", server=True,
                                   hosts=("127.0.0.1", "localhost"))
    server_key, server_cert = write_pair(directory, "server", key_pem, cert_pem)
    return TlsFiles(directory, ca_cert, ca_key, server_cert, server_key)


async def wait_for(predicate, timeout_s: float = 20.0, interval_s: float = 0.05, what: str = "condition"):  # noqa: ANN001, ANN201
    """Poll ``predicate`` (sync or async) until truthy; fail naming ``what`` after ``timeout_s`` real seconds.

    A bound on waiting for a real broker, not a timing assertion: the tests check outcomes.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)


def make_hub(hub_dir: Path, broker: Broker, client_id: str = "hub") -> Hub:
    """A reference hub with a fresh key, started against ``broker`` (stop it yourself)."""
    if not (hub_dir / "hub.key").exists():
        SigningKey.generate().save(hub_dir / "hub.key")
    hub = Hub(hub_dir, broker.settings(client_id, cert_for="hub"))
    hub.start()
    return hub


def node_config(state_dir: Path, broker: Broker | None, node_id: str, hub_keys: list[str],
                **sync: object) -> NodeConfig:
    data: dict = {"node": {"id": node_id, "state_dir": str(state_dir)},
                  "sync": {"hub_public_keys": hub_keys, "reconnect_min_s": 1, "reconnect_max_s": 2,
                           "ack_timeout_s": 5, "chunk_timeout_s": 2, **sync}}
    if broker is not None:
        data["sync"].update(broker_host=broker.host, broker_port=broker.port)
        if broker.tls is not None:
            cert, key = broker.tls.client(node_id)
            data["sync"].update(tls_ca_file=str(broker.tls.ca_cert), tls_cert_file=str(cert),
                                tls_key_file=str(key))
    return NodeConfig.model_validate(data)


@dataclass
class RunningNode:
    node: Node
    store: Store
    jobs: Jobs
    sync: Sync

    async def stop(self) -> None:
        await self.node.stop()
        await asyncio.to_thread(self.store.close)


async def start_node(config: NodeConfig, clock: Clock | None = None) -> RunningNode:
    store = await asyncio.to_thread(lambda: Store(config.state_dir / "node.sqlite").open())
    node = Node(config.node, clock or Clock())
    jobs = Jobs(node, store)
    node.add(jobs)
    sync = Sync(node, config.sync, store, jobs, files_dir=config.files_dir,
                max_file_bytes=config.jobs.max_file_bytes, reserve_bytes=0, gate=make_gate(config),
                printer_profile=load_profile(config.printer.profile), site=node_site(config))
    node.add(sync)
    await node.start()
    return RunningNode(node, store, jobs, sync)


@asynccontextmanager
async def running_node(config: NodeConfig, clock: Clock | None = None) -> AsyncIterator[RunningNode]:
    rn = await start_node(config, clock)
    try:
        yield rn
    finally:
        await rn.stop()


def ledger_rows(hub: Hub, sql: str, *args: object) -> list[dict]:
    return hub.ledger.read(lambda c: [dict(r) for r in c.execute(sql, args).fetchall()])


def gcode_file(path: Path, size_bytes: int, seed: int = 1) -> Path:
    """A made-up but well-formed G-code file of about ``size_bytes`` (tests generate their own)."""
    import random

    rng = random.Random(seed)
    lines = ["; generated for a sync test", "G28", "M140 S60", "M104 S200", "G90"]
    total = sum(len(x) + 1 for x in lines)
    while total < size_bytes:
        line = f"G1 X{rng.uniform(0, 200):.3f} Y{rng.uniform(0, 200):.3f} E{rng.uniform(0, 5):.5f} F1800"
        lines.append(line)
        total += len(line) + 1
    path.write_text("\n".join(lines) + "\n")
    return path


def plan_event(t_s: float, next_start_s: float | None, planned: int = 1, waiting: int = 0, soc_pct: float = 70.0):  # noqa: ANN201
    """A planner ``plan_updated`` summary with ``planned`` prints, the first at ``next_start_s``."""
    from node.events import PlannedJobSummary, PlanSummary, WaitingJobSummary

    jobs = [PlannedJobSummary(job_id=f"p{i}", name="x", start_s=(next_start_s or t_s) + 3600 * i,
                              end_s=(next_start_s or t_s) + 3600 * i + 1800, energy_wh=50.0, min_soc_pct=40.0,
                              reason="sun") for i in range(planned)]
    return PlanSummary(t_s=t_s, trigger="test", horizon_h=48.0, step_s=300.0, soc_pct=soc_pct, reserve_pct=25.0,
                       forecast_source="clear-sky", forecast_stale=False, bias_factor=1.0, pv_forecast_wh=2500.0,
                       pv_lost_wh=400.0, min_soc_pct=35.0, planned=jobs,
                       waiting=[WaitingJobSummary(job_id=f"w{i}", name="y", reason="no window") for i in range(waiting)],
                       next_start_s=next_start_s)
