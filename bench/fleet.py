"""A fleet against the real hub: ``python bench/fleet.py --nodes 100 --minutes 10 [--json out.json]``.

What runs, all on loopback and all real:
- a PostgreSQL from the distribution's binaries (``initdb`` in a temp dir, a free port, fsync on:
  an ack promises a durable commit) holding the hub ledger;
- a Mosquitto 2 on a free port (persistence on, as a broker in production);
- ``--workers`` processes of ``printnode hub serve --share-group fleet`` (MQTT v5 shared subscriptions);
- N light protocol-level nodes in this process: no printer, no pvlib; each is a paho client (the
  project's ``node.sync.mqtt`` set-up, persistent session, last will) driven by one asyncio loop, with
  an in-memory outbox that behaves as the node's (sent, resent after ``--ack-timeout-s`` until acked,
  100 in flight, all re-sent after a reconnect), real Ed25519 verification and replay window of every
  manifest and command (``node.sync.signing.Verifier``), chunked downloads checked by sha256, and the
  wire messages of ``node.sync.protocol``.  Each node sends a telemetry batch every minute (1-minute
  samples, one per batch: ten times the default ``telemetry_batch_s`` rate) plus its retained power
  state, a plan summary every 5 minutes and on each job change, and for each job: queued, printing,
  progress every minute, completed (or cancelled by the hub) and the job record.  Nodes go offline
  (``--offline-per-hour`` spells of 30-120 s, last will published) and reconnect with backoff.
- a job stream: ``--jobs-per-node-hour`` fleet jobs submitted to the ledger (the dispatcher picks
  the node), 5 % of them cancelled from the hub while they run.

Faults: worker 0 SIGKILLed at ``--kill-at-min`` (restarted ``--restart-after-s`` later, as systemd
would), the broker stopped and started at ``--broker-restart-at-min``.  After ``--minutes`` the nodes
stop making reports, every node comes online, and the bench waits until every outbox is empty.

Checked at the end, from the ledger: every report a node made is committed exactly once (one
``received`` row per report id, nothing missing, nothing extra), every telemetry sample and job
state once, and no job was signed for two nodes or in two different manifests.  Measured: ack
latency (first send -> ack) of reports sent while connected and of all reports, messages/s through
the hub, CPU and RSS of the hub workers (and of Mosquitto and PostgreSQL, for the picture).
Run it under ``nice`` on a shared machine; it exits 1 if a check fails.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.reasoncodes import ReasonCode  # noqa: E402

from node.hub.backends import open_ledger  # noqa: E402
from node.hub.pgserver import TempPostgres, free_port  # noqa: E402
from node.hub.server import cancel_job, submit_job  # noqa: E402
from node.sync import protocol as p  # noqa: E402
from node.sync.mqtt import BrokerSettings, connect_async, make_client  # noqa: E402
from node.sync.signing import Rejected, SigningKey, Verifier  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TICK_S = 1.0
OUTBOX_WINDOW = 100
CAPS = p.PrinterCapabilities(profile="ender3", build_volume_mm=(220, 220, 250), nozzle_mm=0.4,
                             materials=["PLA"], max_hotend_c=260, max_bed_c=100)


# --- the parts the bench starts ------------------------------------------------------------------
class Mosquitto:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "set_tcp_nodelay true",
                 "persistence true", f"persistence_location {workdir}/", "autosave_interval 30",
                 "max_queued_messages 10000", f"log_dest file {workdir / 'mosquitto.log'}"]
        if os.geteuid() == 0:
            lines.append("user root")
        (workdir / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.workdir / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


class Worker:
    """One ``printnode hub serve`` process of the share group."""

    def __init__(self, index: int, hub_dir: Path, ledger_url: str, port: int, logdir: Path) -> None:
        self.index, self.hub_dir, self.ledger_url, self.port, self.logdir = index, hub_dir, ledger_url, port, logdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        log = (self.logdir / f"hub-w{self.index}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "hub", "--dir", str(self.hub_dir), "--ledger", self.ledger_url, "serve",
             "--broker-host", "127.0.0.1", "--broker-port", str(self.port), "--share-group", "fleet",
             "--client-id", f"hub-w{self.index}", "--forecast", "none"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


class Meter:
    """CPU seconds per process (kept after it dies) and RSS samples, by group."""

    def __init__(self) -> None:
        self.cpu: dict[str, dict[int, float]] = {}
        self.rss: dict[str, list[float]] = {}
        self.rss_each: dict[str, list[float]] = {}

    def sample(self, group: str, pids: list[int]) -> None:
        total_rss = 0.0
        for pid in pids:
            cpu = proc_cpu_s(pid)
            if cpu is not None:
                self.cpu.setdefault(group, {})[pid] = cpu
            rss = proc_rss_mb(pid)
            if rss is not None:
                total_rss += rss
                self.rss_each.setdefault(group, []).append(rss)
        self.rss.setdefault(group, []).append(total_rss)

    def cpu_s(self, group: str) -> float:
        return sum(self.cpu.get(group, {}).values())


# --- the simulated nodes ---------------------------------------------------------------------------
@dataclass
class Pending:
    kind: str
    payload: bytes
    created: float
    first_sent: float | None = None
    last_sent: float | None = None
    sends: int = 0
    sent_offline_free: bool = True  # every send so far happened while the node believed it was connected


@dataclass
class SimJob:
    job_id: str
    file_sha256: str
    file_bytes: int
    version: int = 0
    state: str = "downloading"
    next_at: float = 0.0
    print_s: float = 0.0
    started: float = 0.0
    data: bytearray = field(default_factory=bytearray)


class Fleet:
    """Shared bookkeeping of the simulated nodes (one asyncio loop drives every paho client)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int, hub_key_hex: str, args: argparse.Namespace) -> None:
        self.loop, self.port, self.hub_key_hex, self.args = loop, port, hub_key_hex, args
        self.generating = True
        self.latency_clean: list[float] = []
        self.latency_all: list[float] = []
        self.msgs_up = 0
        self.msgs_down = 0
        self.resends = 0
        self.resend_minutes: dict[int, int] = {}  # minute of the run -> resends in it
        self.t0 = time.monotonic()
        self.reports: dict[str, dict[str, str]] = {}  # node -> report id -> kind
        self.telemetry_samples = 0
        self.job_states = 0
        self.manifests: dict[str, set[tuple[str, str]]] = {}  # job -> {(node, sha of the signed payload)}
        self.rejected: dict[str, int] = {}
        self.bad_chunks = 0
        self.connects = 0


class SimNode:
    def __init__(self, fleet: Fleet, node_id: str, rng: random.Random) -> None:
        self.fleet, self.node_id, self.rng = fleet, node_id, rng
        self.settings = BrokerSettings(host="127.0.0.1", port=fleet.port, client_id=node_id, keepalive_s=30)
        self.client = make_client(self.settings)
        self.client.will_set(p.state_topic(node_id, "online"),
                             p.OnlineState(online=False).model_dump_json(exclude_none=True), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_socket_open = self._on_socket_open
        self.client.on_socket_close = self._on_socket_close
        self.client.on_socket_register_write = self._on_register_write
        self.client.on_socket_unregister_write = self._on_unregister_write
        connect_async(self.client, self.settings)
        self.verifier = Verifier(node_id, [fleet.hub_key_hex])
        self.accepted: list[int] = []
        self.outbox: dict[str, Pending] = {}
        self.connected = False
        self.offline_until = 0.0
        self.reconnect_at = 0.0
        self.backoff_s = 1.0
        self.jobs: dict[str, SimJob] = {}
        self.chunk_waits: dict[str, str] = {}
        now = time.monotonic()
        self.next_telemetry = now + rng.uniform(0, 60)
        self.next_plan = now + rng.uniform(0, 300)
        self.next_spell = now + rng.expovariate(fleet.args.offline_per_hour / 3600) \
            if fleet.args.offline_per_hour > 0 else math.inf
        self.soc = rng.uniform(40, 90)

    # socket plumbing: paho's external-loop callbacks onto the asyncio loop
    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fleet.loop.add_reader(sock, client.loop_read)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.fleet.loop.remove_reader(sock)
        self.fleet.loop.remove_writer(sock)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.fleet.loop.add_writer(sock, client.loop_write)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.fleet.loop.remove_writer(sock)

    def connect(self) -> None:
        try:
            self.client.reconnect()
        except OSError:
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        self.reconnect_at = time.monotonic() + self.backoff_s * self.rng.uniform(0.5, 1.5)
        self.backoff_s = min(self.backoff_s * 2, 30.0)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        if reason_code.is_failure:
            self._schedule_reconnect()
            return
        self.connected = True
        self.backoff_s = 1.0
        self.fleet.connects += 1
        client.subscribe(f"{p.node_root(self.node_id)}/down/#", qos=1)
        now_s = time.time()
        self._pub(p.state_topic(self.node_id, "online"), p.OnlineState(online=True, t_s=now_s).model_dump_json(),
                  retain=True)
        hello = p.Hello(node_id=self.node_id, t_s=now_s, capabilities=CAPS,
                        jobs=[p.JobVersion(job_id=j.job_id, version=j.version) for j in self.jobs.values()])
        self._pub(p.up_topic(self.node_id, "hello"), hello.model_dump_json())
        for entry in self.outbox.values():  # everything unacked goes again now
            entry.last_sent = None
        for job in self.jobs.values():
            if job.state == "downloading":
                self._request_chunk(job)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        self.connected = False
        if time.monotonic() >= self.offline_until:
            self._schedule_reconnect()

    def _pub(self, topic: str, payload: str | bytes, retain: bool = False, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)
        self.fleet.msgs_up += 1

    # the outbox
    def report(self, kind: str, report: p.Report) -> None:
        if kind == "telemetry":
            payload = p.encode_telemetry(report)  # type: ignore[arg-type]
        else:
            payload = report.model_dump_json().encode()
        self.outbox[report.id] = Pending(kind, payload, time.monotonic())
        self.fleet.reports.setdefault(self.node_id, {})[report.id] = kind

    def flush(self, now: float) -> None:
        if not self.connected:
            return
        in_flight = sum(1 for e in self.outbox.values() if e.last_sent is not None
                        and now - e.last_sent < self.fleet.args.ack_timeout_s)
        for entry in self.outbox.values():
            if in_flight >= OUTBOX_WINDOW:
                break
            if entry.last_sent is not None and now - entry.last_sent < self.fleet.args.ack_timeout_s:
                continue
            if entry.sends:
                self.fleet.resends += 1
                minute = int((now - self.fleet.t0) // 60)
                self.fleet.resend_minutes[minute] = self.fleet.resend_minutes.get(minute, 0) + 1
            if entry.first_sent is None:
                entry.first_sent = now
            entry.last_sent = now
            entry.sends += 1
            self._pub(p.up_topic(self.node_id, entry.kind), entry.payload)
            in_flight += 1

    # inbound
    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.fleet.msgs_down += 1
        parsed = p.parse_topic(message.topic)
        if parsed is None:
            return
        kind, payload = parsed[2], bytes(message.payload)
        now = time.monotonic()
        if kind == "ack":
            for msg_id in p.Ack.model_validate_json(payload).ids:
                entry = self.outbox.pop(msg_id, None)
                if entry is None or entry.first_sent is None:
                    continue
                self.fleet.latency_all.append(now - entry.created)
                if entry.sends == 1 and entry.created >= entry.first_sent - 1.0:
                    self.fleet.latency_clean.append(now - entry.first_sent)
        elif kind == "job":
            self._on_manifest(payload)
        elif kind == "command":
            self._on_command(payload)
        elif kind == "chunk":
            self._on_chunk(payload)

    def _open(self, payload: bytes, model: type[Any]) -> Any:
        try:
            body = self.verifier.open(payload, model, time.time(), self.accepted)
        except Rejected as exc:
            self.fleet.rejected[exc.reason] = self.fleet.rejected.get(exc.reason, 0) + 1
            return None
        self.accepted.append(body.seq)
        del self.accepted[:-p.REPLAY_WINDOW]
        return body

    def _on_manifest(self, payload: bytes) -> None:
        manifest = self._open(payload, p.JobManifest)
        if manifest is None:
            return  # a replay (the hub resends open manifests after a hello) or worse: counted
        self.fleet.manifests.setdefault(manifest.job_id, set()).add(
            (self.node_id, hashlib.sha256(payload).hexdigest()))
        if manifest.job_id in self.jobs:
            return
        job = SimJob(manifest.job_id, manifest.file_sha256, manifest.file_bytes)
        self.jobs[job.job_id] = job
        self._request_chunk(job)

    def _request_chunk(self, job: SimJob) -> None:
        if not self.connected:
            return
        req_id = p.new_id()[:8]
        self.chunk_waits[job.job_id] = req_id
        req = p.ChunkRequest(job_id=job.job_id, offset=len(job.data), length=128 * 1024, req_id=req_id)
        self._pub(p.up_topic(self.node_id, "chunk_req"), req.model_dump_json())

    def _on_chunk(self, payload: bytes) -> None:
        try:
            header, data = p.decode_chunk(payload)
        except ValueError:
            self.fleet.bad_chunks += 1
            return
        job = self.jobs.get(header.job_id)
        if job is None or job.state != "downloading" or header.error or header.offset != len(job.data):
            return
        job.data += data
        if len(job.data) < job.file_bytes:
            self._request_chunk(job)
            return
        if hashlib.sha256(job.data).hexdigest() != job.file_sha256:
            self.fleet.bad_chunks += 1
            job.data.clear()
            self._request_chunk(job)
            return
        job.data = bytearray()
        now = time.monotonic()
        self._job_state(job, "queued")
        job.next_at = now + self.rng.uniform(5, 60)
        job.print_s = self.rng.uniform(60, 240)

    def _on_command(self, payload: bytes) -> None:
        command = self._open(payload, p.Command)
        if command is None:
            return
        args = command.args
        ok, detail = False, "unsupported here"
        if isinstance(args, p.CancelArgs):
            job = self.jobs.get(args.job_id)
            if job is None or job.state in ("completed", "cancelled"):
                detail = "no such open job"
            else:
                self._job_state(job, "cancelled", "cancelled by the hub")
                self._finish(job, p.WireState.CANCELED)
                ok, detail = True, "cancelled"
        self.report("command_result", p.CommandResult(node_id=self.node_id, t_s=time.time(),
                                                      command_id=command.command_id, ok=ok, detail=detail))

    # the node's own life, once a second
    def _job_state(self, job: SimJob, state: str, reason: str = "") -> None:
        job.version += 1
        job.state = state
        self.report("job_state", p.JobStateReport(node_id=self.node_id, t_s=time.time(), job_id=job.job_id,
                                                  version=job.version, node_state=state,
                                                  wire_state=p.wire_state(state), reason=reason))
        self.fleet.job_states += 1
        self.next_plan = 0.0

    def _finish(self, job: SimJob, outcome: p.WireState) -> None:
        now_s = time.time()
        self.report("job_record", p.JobRecord(node_id=self.node_id, t_s=now_s, job_id=job.job_id, outcome=outcome,
                                              node_state=job.state, created_s=now_s - job.print_s,
                                              duration_s=job.print_s, file_sha256=job.file_sha256))

    def tick(self, now: float) -> None:
        if not self.connected and now >= self.offline_until and self.reconnect_at and now >= self.reconnect_at:
            self.reconnect_at = 0.0
            self.connect()
        if self.fleet.generating:
            self._live(now)
        self.flush(now)

    def _live(self, now: float) -> None:
        if now >= self.next_spell and self.connected:
            self.offline_until = now + self.rng.uniform(30, 120)
            self.next_spell = self.offline_until + self.rng.expovariate(self.fleet.args.offline_per_hour / 3600)
            self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
            self.reconnect_at = self.offline_until
        now_s = time.time()
        if now >= self.next_telemetry:
            self.next_telemetry += 60
            printing = any(j.state == "printing" for j in self.jobs.values())
            self.soc = min(100.0, max(20.0, self.soc + self.rng.uniform(-0.5, 0.6) - (0.4 if printing else 0)))
            pv = max(0.0, self.rng.gauss(180, 40))
            row = {"t_s": round(now_s, 3), "pv_w": pv, "pv_v": 36 + pv / 50, "battery_v": 12.8 + self.soc / 100,
                   "battery_a": (pv - 60) / 13, "load_w": 8.0, "printer_w": 120.0 if printing else 0.0,
                   "soc_pct": self.soc}
            self.report("telemetry", p.build_telemetry(self.node_id, now_s, [row], step_s=60))
            self.fleet.telemetry_samples += 1
            if self.connected:
                self._pub(p.state_topic(self.node_id, "power"),
                          p.PowerState(t_s=now_s, soc_pct=round(self.soc, 1), pv_w=round(pv, 1)).model_dump_json(),
                          retain=True)
        for job in list(self.jobs.values()):
            if job.state == "queued" and now >= job.next_at:
                self._job_state(job, "printing")
                job.started, job.next_at = now, now + 60
            elif job.state == "printing" and now >= job.started + job.print_s:
                self._job_state(job, "completed")
                self._finish(job, p.WireState.SUCCEEDED)
            elif job.state == "printing" and now >= job.next_at:
                job.next_at = now + 60
                elapsed = now - job.started
                self.report("job_progress", p.JobProgressReport(
                    node_id=self.node_id, t_s=now_s, job_id=job.job_id,
                    percent=min(100.0, 100 * elapsed / job.print_s), bytes_done=int(job.file_bytes * elapsed
                                                                                      / job.print_s) % job.file_bytes,
                    bytes_total=job.file_bytes, elapsed_s=elapsed))
        if now >= self.next_plan:
            self.next_plan = now + 300
            busy = [j for j in self.jobs.values() if j.state in ("queued", "printing", "downloading")]
            window = now_s if not busy else now_s + 120 * len(busy)
            self.report("plan", p.PlanSummaryReport(node_id=self.node_id, t_s=now_s, next_window_start_s=window,
                                                    next_window_end_s=window + 4 * 3600, queue_length=len(busy),
                                                    soc_pct=round(self.soc, 1)))


# --- the run -----------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    pg = TempPostgres(durable=True).start()  # its own temp dir: under root it belongs to postgres
    mosquitto = Mosquitto(work / "broker")
    workers: list[Worker] = []
    meter = Meter()
    nodes: list[SimNode] = []
    try:
        url = pg.create_database("fleet")
        hub_dir = work / "hub"
        hub_dir.mkdir()
        key = SigningKey.generate()
        key.save(hub_dir / "hub.key")
        ledger = open_ledger(url)
        mosquitto.start()
        workers = [Worker(i, hub_dir, url, mosquitto.port, work) for i in range(args.workers)]
        for w in workers:
            w.start()
        await asyncio.sleep(3)
        loop = asyncio.get_running_loop()
        fleet = Fleet(loop, mosquitto.port, key.public_hex, args)
        rng = random.Random(args.seed)
        nodes = [SimNode(fleet, f"node-{i:04d}", random.Random(rng.random())) for i in range(args.nodes)]
        for i, sim in enumerate(nodes):  # a fleet does not all boot in the same second
            sim.connect()
            if i % 50 == 49:
                await asyncio.sleep(0.2)
        gcode = work / "part.gcode"
        gcode.write_text("".join(f"G1 X{rng.uniform(0, 200):.2f} Y{rng.uniform(0, 200):.2f} E0.05 F1800\n"
                                 for _ in range(600)))
        events: list[str] = []
        submitted: list[str] = []
        cancelled: list[str] = []
        t0 = fleet.t0 = time.monotonic()
        duration = args.minutes * 60
        job_rate = args.jobs_per_node_hour * args.nodes / 3600
        next_job = t0 + rng.expovariate(job_rate) if job_rate > 0 else math.inf
        kill_at = t0 + args.kill_at_min * 60 if args.kill_at_min >= 0 else math.inf
        restart_worker_at = math.inf
        broker_at = t0 + args.broker_restart_at_min * 60 if args.broker_restart_at_min >= 0 else math.inf
        next_sample = t0
        cpu0 = {"hub": 0.0}
        last_misc = 0.0

        def sample() -> None:
            meter.sample("hub", [w.proc.pid for w in workers if w.proc is not None and w.proc.poll() is None])
            if mosquitto.proc is not None:
                meter.sample("mosquitto", [mosquitto.proc.pid])
            if pg.proc is not None:
                meter.sample("postgres", [pg.proc.pid, *children(pg.proc.pid)])
            meter.sample("fleet", [os.getpid()])

        sample()
        cpu0 = {g: meter.cpu_s(g) for g in ("hub", "mosquitto", "postgres", "fleet")}
        msgs0 = (fleet.msgs_up, fleet.msgs_down)
        draining_since: float | None = None
        while True:
            now = time.monotonic()
            if now - last_misc >= 1.0:
                last_misc = now
                for sim in nodes:
                    if sim.connected:
                        sim.client.loop_misc()
            for sim in nodes:
                sim.tick(now)
            if fleet.generating:
                while now >= next_job:
                    next_job += rng.expovariate(job_rate)
                    job_id = await asyncio.to_thread(submit_job, ledger, hub_dir / "files", gcode,
                                                     name=f"part-{len(submitted)}")
                    submitted.append(job_id)
                    if rng.random() < 0.05:
                        cancel_at = now + rng.uniform(60, 150)
                        loop.call_at(loop.time() + (cancel_at - now), lambda j=job_id: cancelled.append(j))
                if now >= kill_at:
                    kill_at = math.inf
                    workers[0].kill()
                    events.append(f"{now - t0:.0f} s: worker 0 SIGKILLed")
                    restart_worker_at = now + args.restart_after_s
                if now >= restart_worker_at:
                    restart_worker_at = math.inf
                    workers[0].start()
                    events.append(f"{now - t0:.0f} s: worker 0 started again")
                if now >= broker_at:
                    broker_at = math.inf
                    await asyncio.to_thread(mosquitto.stop)
                    events.append(f"{now - t0:.0f} s: broker stopped")
                    await asyncio.sleep(2)
                    await asyncio.to_thread(mosquitto.start)
                    events.append(f"{time.monotonic() - t0:.0f} s: broker started")
                while cancelled:
                    job_id = cancelled.pop()
                    try:
                        await asyncio.to_thread(cancel_job, ledger, job_id)
                        events.append(f"{now - t0:.0f} s: cancel {job_id}")
                    except (KeyError, ValueError):
                        pass  # finished (or not yet assigned and cancelled outright) first
            if now >= next_sample:
                next_sample += 5
                sample()
            if fleet.generating and now - t0 >= duration:
                fleet.generating = False
                run_s = now - t0
                cpu_run = {g: meter.cpu_s(g) - cpu0[g] for g in cpu0}
                msgs_run = (fleet.msgs_up - msgs0[0], fleet.msgs_down - msgs0[1])
                draining_since = now
                for sim in nodes:  # every node back online for the drain
                    sim.offline_until = 0.0
                    if not sim.connected and not sim.reconnect_at:
                        sim.reconnect_at = now
                events.append(f"{now - t0:.0f} s: reports stop; drain")
            if draining_since is not None:
                pending = sum(len(s.outbox) for s in nodes)
                if pending == 0 or now - draining_since > args.drain_max_s:
                    break
            await asyncio.sleep(max(0.0, TICK_S - (time.monotonic() - now)))
        drain_s = time.monotonic() - draining_since
        left_in_outboxes = sum(len(s.outbox) for s in nodes)
        await asyncio.sleep(2)  # let the last acks' commits be the last writes
        checks = await asyncio.to_thread(verify, ledger, fleet, submitted)
        ledger.close()
        hub_pids_rss = meter.rss.get("hub", [])
        result = {
            "nodes": args.nodes, "workers": args.workers, "minutes": args.minutes, "run_s": round(run_s, 1),
            "drain_s": round(drain_s, 1), "left_in_outboxes": left_in_outboxes, "events": events,
            "reports": sum(len(r) for r in fleet.reports.values()), "resends": fleet.resends,
            "resends_by_minute": {str(k): v for k, v in sorted(fleet.resend_minutes.items())},
            "telemetry_samples": fleet.telemetry_samples, "job_states": fleet.job_states,
            "jobs_submitted": len(submitted), "connects": fleet.connects, "rejected": fleet.rejected,
            "ack_latency_connected_ms": {"p50": _ms(percentile(fleet.latency_clean, 0.5)),
                                         "p99": _ms(percentile(fleet.latency_clean, 0.99)),
                                         "n": len(fleet.latency_clean)},
            "ack_latency_all_ms": {"p50": _ms(percentile(fleet.latency_all, 0.5)),
                                   "p99": _ms(percentile(fleet.latency_all, 0.99)),
                                   "max": _ms(max(fleet.latency_all, default=0.0)), "n": len(fleet.latency_all)},
            "messages_per_s": {"up": round(msgs_run[0] / run_s, 1), "down": round(msgs_run[1] / run_s, 1),
                               "total": round(sum(msgs_run) / run_s, 1)},
            "cpu_pct_of_one_core": {g: round(100 * v / run_s, 1) for g, v in cpu_run.items()},
            "hub_cpu_pct_per_100_nodes": round(100 * cpu_run["hub"] / run_s / (args.nodes / 100), 2),
            "hub_rss_mb_all_workers": {"mean": round(statistics.fmean(hub_pids_rss), 1) if hub_pids_rss else None,
                                       "max": round(max(hub_pids_rss, default=0.0), 1)},
            "hub_rss_mb_per_100_nodes": round(statistics.fmean(hub_pids_rss) / (args.nodes / 100), 1)
            if hub_pids_rss else None,
            "rss_mb_max": {g: round(max(v, default=0.0), 1) for g, v in meter.rss.items()},
            "checks": checks,
        }
        return result
    finally:
        for sim in nodes:
            try:
                sim.client.disconnect()
            except Exception:  # noqa: BLE001 - tearing down
                pass
        for w in workers:
            w.stop()
        mosquitto.stop()
        pg.remove()


def _ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 1)


def verify(ledger: Any, fleet: Fleet, submitted: list[str]) -> dict[str, Any]:
    """What the ledger holds against what the nodes made."""
    def q(sql: str) -> list[Any]:
        return ledger.read(lambda c: c.execute(sql).fetchall())

    made = {(node, msg_id) for node, ids in fleet.reports.items() for msg_id in ids}
    stored = [(r[0], r[1]) for r in q("SELECT node_id, msg_id FROM received")]
    stored_set = set(stored)
    telemetry_rows = q("SELECT COUNT(*) FROM telemetry")[0][0]
    job_events = q("SELECT COUNT(*) FROM job_events")[0][0]
    jobs = {r[0]: (r[1], r[2], r[3]) for r in q("SELECT job_id, node_id, hub_state, wire_state FROM jobs")}
    two_nodes = [j for j, got in fleet.manifests.items() if len({n for n, _ in got}) > 1]
    two_manifests = [j for j, got in fleet.manifests.items() if len({h for _, h in got}) > 1]
    wrong_node = [j for j, got in fleet.manifests.items() if {n for n, _ in got} != {jobs.get(j, (None,))[0]}]
    assigned = sum(1 for j in submitted if jobs.get(j, (None, "new"))[1] == "sent")
    checks = {
        "reports_made": len(made), "received_rows": len(stored),
        "missing": len(made - stored_set), "extra": len(stored_set - made),
        "duplicate_rows": len(stored) - len(stored_set),
        "telemetry_samples_made": fleet.telemetry_samples, "telemetry_rows": telemetry_rows,
        "job_states_made": fleet.job_states, "job_event_rows": job_events,
        "jobs_submitted": len(submitted), "jobs_signed": assigned, "manifests_seen_by_nodes": len(fleet.manifests),
        "jobs_on_two_nodes": len(two_nodes), "jobs_with_two_manifests": len(two_manifests),
        "manifest_on_other_node_than_ledger": len(wrong_node), "bad_chunks": fleet.bad_chunks,
    }
    checks["ok"] = (checks["missing"] == 0 and checks["extra"] == 0 and checks["duplicate_rows"] == 0
                    and telemetry_rows == fleet.telemetry_samples and job_events == fleet.job_states
                    and not two_nodes and not two_manifests and not wrong_node and fleet.bad_chunks == 0)
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-at-min", type=float, default=3.0, help="SIGKILL worker 0 (negative: never)")
    parser.add_argument("--restart-after-s", type=float, default=30.0)
    parser.add_argument("--broker-restart-at-min", type=float, default=6.0, help="negative: never")
    parser.add_argument("--jobs-per-node-hour", type=float, default=6.0)
    parser.add_argument("--offline-per-hour", type=float, default=1.0, help="offline spells per node and hour")
    parser.add_argument("--ack-timeout-s", type=float, default=30.0, help="the node's [sync].ack_timeout_s")
    parser.add_argument("--drain-max-s", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write the result here too")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, ledger)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="printnode-fleet-"))
    try:
        result = asyncio.run(run(args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}", file=sys.stderr)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if result["checks"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
