"""Benchmark the node ⇄ hub sync against a local Mosquitto: ``python bench/sync.py [--json]``.

1. request/response latency: a ChunkRequest of 64 bytes to the real reference hub and its reply,
   MQTT v5, loopback, TCP_NODELAY on client and broker (and once with Nagle left on, to show why);
2. chunked transfer of a 20 MB file: real hub → real Sync component (manifest signed, chunks
   written + fsync'd, prefix committed to SQLite, sha256 verified) until the job is QUEUED;
3. MQTT bytes of one simulated day of telemetry at 1-minute resolution: a TCP proxy between the
   node and the broker counts every byte of the MQTT packets both ways (telemetry batches, their
   PUBACKs, the hub's application acks and their PUBACKs, retained power state) after the
   connection is up.  Keepalive pings (none happen: keepalive 3600 s), TCP/IP headers and TLS
   records are not counted (TLS adds ~29 bytes per record with AES-GCM, TCP/IP 40-60 per segment).

Starts its own broker (``mosquitto`` on PATH or /usr/sbin) on a free port in a temp directory.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.clock import Clock  # noqa: E402
from node.config import NodeConfig  # noqa: E402
from node.daemon import make_gate  # noqa: E402
from node.events import TelemetrySample  # noqa: E402
from node.hub.server import Hub, submit_job  # noqa: E402
from node.jobs import Jobs, JobState  # noqa: E402
from node.node import Node  # noqa: E402
from node.printer.profile import load_profile
from node.store import Store  # noqa: E402
from node.sync import protocol as p  # noqa: E402
from node.sync.client import Sync  # noqa: E402
from node.sync.mqtt import BrokerSettings, connect_async, make_client  # noqa: E402
from node.sync.signing import SigningKey  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, workdir: Path, nodelay: bool = True) -> None:
        self.port = free_port()
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = workdir / f"mosquitto-{self.port}.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 100000"]
        if nodelay:
            lines.append("set_tcp_nodelay true")
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def make_hub(hub_dir: Path, port: int, nodelay: bool = True) -> Hub:
    SigningKey.generate().save(hub_dir / "hub.key")
    hub = Hub(hub_dir, BrokerSettings(host="127.0.0.1", port=port, client_id="hub"))
    if not nodelay:
        original = hub.start

        def start_with_nagle() -> None:
            original()
            assert hub.client is not None
            hub.client.on_socket_open = None
        hub.start = start_with_nagle  # type: ignore[method-assign]
    hub.start()
    if not hub.connected.wait(10):
        raise RuntimeError("hub did not connect")
    return hub


# --- 1. request/response ------------------------------------------------------------------------
def bench_latency(port: int, hub: Hub, job_id: str, rounds: int, nodelay: bool) -> dict[str, float]:
    settings = BrokerSettings(host="127.0.0.1", port=port, client_id=f"lat-{nodelay}", persistent=False)
    client = make_client(settings)
    if not nodelay:
        client.on_socket_open = None
    got = threading.Event()
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.on_message = lambda c, u, m: got.set()
    connect_async(client, settings)
    client.loop_start()
    connected.wait(10)
    sub_done = threading.Event()
    client.on_subscribe = lambda *a: sub_done.set()
    client.subscribe(p.down_topic("lat", "chunk"), qos=0)
    sub_done.wait(5)
    samples_ms = []
    for i in range(rounds + 20):
        got.clear()
        req = p.ChunkRequest(job_id=job_id, offset=0, length=64, req_id=str(i)).model_dump_json()
        t0 = time.perf_counter()
        client.publish(p.up_topic("lat", "chunk_req"), req, qos=1)  # as the node sends it
        if not got.wait(5):
            raise RuntimeError("no reply")
        if i >= 20:  # warm-up excluded
            samples_ms.append((time.perf_counter() - t0) * 1000)
    client.disconnect()
    client.loop_stop()
    samples_ms.sort()
    return {"median_ms": round(statistics.median(samples_ms), 3),
            "p99_ms": round(samples_ms[int(len(samples_ms) * 0.99) - 1], 3), "rounds": rounds}


# --- node helpers -------------------------------------------------------------------------------
async def start_node(state_dir: Path, port: int, hub_key: str, **sync: object) -> tuple[Node, Store, Jobs, Sync]:
    config = NodeConfig.model_validate({"node": {"id": "bench", "state_dir": str(state_dir)},
                                        "sync": {"broker_host": "127.0.0.1", "broker_port": port,
                                                 "hub_public_keys": [hub_key], **sync}})
    store = await asyncio.to_thread(lambda: Store(state_dir / "node.sqlite").open())
    node = Node(config.node, Clock())
    jobs = Jobs(node, store)
    node.add(jobs)
    sync_component = Sync(node, config.sync, store, jobs, files_dir=config.files_dir,
                          max_file_bytes=config.jobs.max_file_bytes, reserve_bytes=0, gate=make_gate(config),
                printer_profile=load_profile(config.printer.profile))
    node.add(sync_component)
    await node.start()
    return node, store, jobs, sync_component


async def wait(predicate, timeout_s: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        await asyncio.sleep(0.01)


# --- 2. transfer --------------------------------------------------------------------------------
async def bench_transfer(tmp: Path, port: int, hub: Hub, size_mb: int, chunk_kib: int, window: int) -> dict:
    source = tmp / f"big-{chunk_kib}-{window}.gcode"
    block = b"G1 X100.000 Y100.000 E0.12345 F1800\n"
    with open(source, "wb") as fh:
        n = size_mb * 1024 * 1024 // len(block)
        for i in range(n):
            fh.write(block[:-2] + str(i % 10).encode() + b"\n")
    state_dir = tmp / f"node-transfer-{chunk_kib}-{window}"
    node, store, jobs, sync_component = await start_node(state_dir, port, hub.key.public_hex,
                                                         chunk_bytes=chunk_kib * 1024, chunk_window=window)
    try:
        await wait(lambda: sync_component.connected.is_set(), 10)
        t0 = time.perf_counter()
        job_id = submit_job(hub.ledger, hub.files_dir, source, node_id="bench")

        async def queued() -> bool:
            job = await jobs.get(job_id)
            return job is not None and job.state == JobState.QUEUED
        await wait(queued, 300)
        elapsed = time.perf_counter() - t0
    finally:
        await node.stop()
        await asyncio.to_thread(store.close)
    size = source.stat().st_size
    return {"bytes": size, "chunk_kib": chunk_kib, "window": window, "seconds": round(elapsed, 2),
            "mb_per_s": round(size / 1e6 / elapsed, 2)}


# --- 3. bytes per day ---------------------------------------------------------------------------
class CountingProxy:
    """TCP proxy counting payload bytes each way (what MQTT puts on TCP; no TCP/IP headers)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0
        self.down = 0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t_reader, t_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for w in (writer, t_writer):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await src.read(65536):
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, t_writer, True), pump(t_reader, writer, False))

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def solar_day(t0_s: float, minute: int) -> dict[str, float]:
    """A plausible clear day: PV on a sine from 06:00 to 18:00, SoC and voltage following, noise."""
    hour = minute / 60
    pv_w = max(0.0, 400 * math.sin(math.pi * (hour - 6) / 12)) if 6 <= hour <= 18 else 0.0
    pv_w += (minute * 7919 % 13) * 0.37 if pv_w else 0.0
    soc = 40 + 50 * min(1.0, max(0.0, (hour - 7) / 9)) - (0 if hour < 18 else (hour - 18) * 3)
    return {"t_s": t0_s + minute * 60, "pv_w": round(pv_w, 1), "pv_v": 18.0 + pv_w / 100 if pv_w else 0.4,
            "battery_v": 12.2 + soc / 100 + (minute % 5) * 0.01, "battery_a": pv_w / 13 - 3.0,
            "load_w": 20.0 + (minute * 31 % 17), "soc_pct": round(soc, 1)}


async def bench_day(tmp: Path, port: int, hub: Hub) -> dict:
    proxy = CountingProxy(port)
    await proxy.start()
    node, store, jobs, sync_component = await start_node(tmp / "node-day", proxy.port, hub.key.public_hex,
                                                         keepalive_s=3600, telemetry_batch_s=600,
                                                         telemetry_resolution_s=60)
    try:
        await wait(lambda: sync_component.connected.is_set(), 10)
        await asyncio.sleep(0.5)  # birth, hello, subscription: counted apart
        connect_up, connect_down = proxy.up, proxy.down
        t0_s = 1_750_032_000.0 - 1_750_032_000.0 % 86400  # a UTC midnight
        for minute in range(24 * 60 + 10):  # 10 more minutes: the last batch of the day is released
            values = solar_day(t0_s, minute)
            await node.send_event("telemetry_sample", TelemetrySample(source="bench", **values))

        async def drained() -> bool:
            return (await sync_component.outbox.stats())["messages"] == 0
        await wait(drained, 60)
        await asyncio.sleep(0.3)
        rows = hub.ledger.read(lambda c: c.execute(
            "SELECT COUNT(*) FROM telemetry WHERE node_id = 'bench' AND t_s < ?", (t0_s + 86400,)).fetchone()[0])
        up, down = proxy.up - connect_up, proxy.down - connect_down
    finally:
        await node.stop()
        await asyncio.to_thread(store.close)
        proxy.close()
    return {"samples_in_ledger": rows, "bytes_up": up, "bytes_down": down, "bytes_total": up + down,
            "kb_per_day": round((up + down) / 1000, 1), "connect_bytes": connect_up + connect_down}


async def main_async(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp)
        hub = make_hub(tmp / "hub", broker.port)
        try:
            small = tmp / "small.gcode"
            small.write_bytes(b"G28\n" * 64)
            lat_job = submit_job(hub.ledger, hub.files_dir, small, node_id="lat")
            await asyncio.sleep(0.5)  # let the pump assign it
            results: dict = {}
            results["latency_nodelay"] = await asyncio.to_thread(bench_latency, broker.port, hub, lat_job,
                                                                 args.rounds, True)
            # the same with Nagle's algorithm left on everywhere (broker without set_tcp_nodelay, clients
            # without TCP_NODELAY): a request waits for the delayed ACK of the previous segment
            nagle_broker = Broker(tmp, nodelay=False)
            nagle_hub = make_hub(tmp / "hub-nagle", nagle_broker.port, nodelay=False)
            try:
                nagle_job = submit_job(nagle_hub.ledger, nagle_hub.files_dir, small, node_id="lat")
                await asyncio.sleep(0.5)
                results["latency_nagle"] = await asyncio.to_thread(bench_latency, nagle_broker.port, nagle_hub,
                                                                   nagle_job, min(args.rounds, 200), False)
            finally:
                nagle_hub.stop()
                nagle_broker.stop()
            results["transfer"] = [await bench_transfer(tmp, broker.port, hub, args.size_mb, chunk, window)
                                   for chunk, window in ((128, 4), (256, 8))]
            results["telemetry_day"] = await bench_day(tmp, broker.port, hub)
            return results
        finally:
            hub.stop()
            broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--size-mb", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    lat, nagle = results["latency_nodelay"], results["latency_nagle"]
    print(f"request/response (64 B chunk, v5, loopback, TCP_NODELAY): median {lat['median_ms']} ms, "
          f"p99 {lat['p99_ms']} ms over {lat['rounds']}")
    print(f"  same with Nagle on (broker and clients):                median {nagle['median_ms']} ms, "
          f"p99 {nagle['p99_ms']} ms")
    for t in results["transfer"]:
        print(f"transfer {t['bytes'] / 1e6:.1f} MB, {t['chunk_kib']} KiB x {t['window']} in flight: "
              f"{t['seconds']} s = {t['mb_per_s']} MB/s (fsync'd, sha256-verified, to QUEUED)")
    d = results["telemetry_day"]
    print(f"telemetry, one simulated day at 1 min: {d['bytes_total']} B = {d['kb_per_day']} KB "
          f"(up {d['bytes_up']}, down {d['bytes_down']}; {d['samples_in_ledger']} samples in the ledger; "
          f"connect {d['connect_bytes']} B not counted)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
