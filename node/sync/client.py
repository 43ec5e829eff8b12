"""The Sync component: the node's side of ``docs/protocol.md``.

Threads: paho runs its own network thread (``loop_start``); every paho callback only hands its
data to the asyncio loop with ``call_soon_threadsafe``.  Everything else — store, jobs, events,
publishing decisions — happens on the loop in :meth:`Sync._run`, one message at a time, so the
component needs no locks.  ``client.publish`` is safe to call from the loop (paho locks inside).

Without ``sync.broker_host`` the component is offline: it still records every report in the
outbox, so the node's history goes up the day it is provisioned.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from node import __version__
from node.events import (
    CloudForecast,
    ConfigChangeRequested,
    HubTimeObserved,
    JobProgress,
    JobStateChanged,
    PlanSummary,
    PrinterState,
    SyncLink,
    TelemetrySample,
    Temperatures,
)
from node.jobcontrol import JobControl, JobVerb, StateOnlyJobControl, run_job_command
from node.jobs import ACTIVE_STATES, FINAL_STATES, Jobs, JobState, TransitionRefused, error_text
from node.node import Component, Node
from node.store import Store, transaction
from node.store.space import no_room_reason
from node.sync import protocol as p
from node.sync.config import SyncSection
from node.sync.discovery import discovery_messages
from node.sync.inbox import Inbox
from node.sync.outbox import Outbox, TelemetryBatcher, insert_report
from node.sync.signing import Rejected, load_public
from node.sync.transfer import Transfers

if TYPE_CHECKING:  # paho (~4 MB resident) loads only when a broker is configured (issue #19)
    import paho.mqtt.client as mqtt

    from node.gate import JobGate
    from node.printer.profile import PrinterProfile
    from node.sync.mqtt import BrokerSettings

log = logging.getLogger(__name__)

OUTBOX_WINDOW = 100  # outbox messages published and not yet acked, at most
TICK_S = 0.5  # real seconds between resend / re-request checks
OUTBOX_STATS_S = 5.0  # real seconds between refreshes of the outbox size shown in status
PROGRESS_REPORT_S = 60.0  # real seconds between durable progress reports of one job
TRANSITIONS_MARK = "sync.transitions_reported"  # meta key: last job_transitions.id put in the outbox
#: meta keys of the cumulative energy counters of ``state/power`` (kept so they never go backwards)
ENERGY_METERS = {"pv_energy_wh": "sync.pv_energy_wh", "printer_energy_wh": "sync.printer_energy_wh"}
ENERGY_MAX_GAP_S = 3600.0  # samples further apart than this are not integrated (the node was off)


def printer_capabilities(prof: PrinterProfile | None, materials: list[str]) -> p.PrinterCapabilities | None:
    """What the node's printer profile offers (None without a profile)."""
    if prof is None:
        return None
    return p.PrinterCapabilities(profile=prof.name, build_volume_mm=(prof.bed_x_mm, prof.bed_y_mm, prof.max_z_mm),
                                 nozzle_mm=prof.nozzle_mm, materials=materials,
                                 max_hotend_c=prof.hotend.max_c, max_bed_c=prof.bed.max_c)


class Sync(Component):
    """Node ⇄ hub over MQTT: outbox out, signed jobs/commands and file chunks in."""

    name = "sync"
    section = "sync"

    def __init__(self, node: Node, config: SyncSection, store: Store, jobs: Jobs, *, files_dir: Path,
                 max_file_bytes: int, reserve_bytes: int, gate: JobGate, job_control: JobControl | None = None,
                 printer_profile: PrinterProfile | None = None, site: p.NodeSite | None = None) -> None:
        super().__init__(node, config)
        p.build_outgoing()
        self.config: SyncSection = config
        self.store = store
        self.jobs = jobs
        #: the runner in the daemon; a node without one (tools, tests) moves states and sends events
        self.job_control: JobControl = job_control or StateOnlyJobControl(node, jobs)
        self.printer_profile = printer_profile
        self.max_file_bytes = max_file_bytes
        self.reserve_bytes = reserve_bytes  # free space a download must leave (node.store.space)
        #: the one gate (node.gate): a hub's job is checked like any other before it is queued
        self.gate = gate
        self.node_id = node.id
        self.files_dir = files_dir
        self.outbox = Outbox(store, int(config.telemetry_budget_mb * 1024 * 1024))
        self.inbox = Inbox(store, self.node_id, config.hub_public_keys)
        self.transfers = Transfers(store, self.files_dir, config.chunk_bytes, config.chunk_window,
                                   config.chunk_timeout_s)
        self.batcher = TelemetryBatcher(self.node_id, config.telemetry_resolution_s, config.telemetry_batch_s)
        self.capabilities: p.PrinterCapabilities | None = None
        self.site = site
        self.connected = asyncio.Event()
        self.connects = 0
        self.counters: dict[str, int] = {"published": 0, "acked": 0, "rejected": 0, "bad_input": 0,
                                         "chunks": 0}
        self._client: mqtt.Client | None = None
        self._settings: BrokerSettings | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._sent: dict[str, float] = {}  # outbox id -> monotonic time published
        self._outbox_dirty = asyncio.Event()
        self._state_docs: dict[str, BaseModel] = {}
        self._state_sent_s: dict[str, float] = {}
        self._progress_sent_s: dict[str, float] = {}
        self._energy_wh: dict[str, float] = {}
        self._active_job: str | None = None
        self._last_power: tuple[float, float] | None = None  # (t_s, printer_w)
        #: cumulative energy counters of state/power (Wh) and the last sample they integrated
        self._meters: dict[str, float] = dict.fromkeys(ENERGY_METERS, 0.0)
        self._meters_saved: dict[str, float] = dict.fromkeys(ENERGY_METERS, 0.0)
        self._last_meter_sample: tuple[float, float | None, float | None] | None = None  # t_s, pv_w, printer_w
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        #: the newest plan report not yet in the outbox, and the task writing it (see :meth:`_on_plan`)
        self._plan_pending: tuple[Any, float] | None = None
        self._plan_writer: asyncio.Task[None] | None = None
        #: what waits in the outbox (messages, bytes, telemetry_bytes), refreshed every OUTBOX_STATS_S
        self.outbox_stats: dict[str, int] | None = None
        self._stats_mono = -1e9

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.capabilities = printer_capabilities(self.printer_profile, self.config.materials)
        await self._recover_transfers()
        await self._report_transitions()  # catch up on transitions committed just before a kill
        active = await self.jobs.list(ACTIVE_STATES, limit=1)
        self._active_job = active[0].id if active else None
        await self._load_meters()
        for event, handler in (("job_state_changed", self._on_job_state), ("job_progress", self._on_progress),
                               ("telemetry_sample", self._on_telemetry), ("printer_state", self._on_printer),
                               ("temperatures", self._on_temperatures),
                               ("plan_updated", self._on_plan)):
            self.node.register_event_handler(event, handler)
        if not self.config.online:
            log.info("sync: no broker configured; offline, keeping the outbox")
            return
        await self._show_offline(True)  # until the first connect
        await self._open_client("5" if self.config.protocol in ("auto", "5") else "3.1.1")
        self._tasks.append(asyncio.ensure_future(self._run()))
        self._tasks.append(asyncio.ensure_future(self._tick()))

    async def _recover_transfers(self) -> None:
        """Resume transfers after a restart; drop those whose job moved on; restart lost ones.

        A kill between ``downloading`` and the transfer row leaves a job with no transfer: it is
        begun again from its stored sha256 and size (the job row has both).
        """
        rows = {row.job_id: row for row in await self.transfers.load()}
        for job_id in rows:
            job = await self.jobs.get(job_id)
            if job is None or job.state != JobState.DOWNLOADING:
                await self.transfers.drop(job_id)
        for job in await self.jobs.list(frozenset({JobState.DOWNLOADING})):
            if job.id not in rows and job.file_sha256 and job.file_bytes and job.file_path:
                log.info("sync: restarting the lost transfer of %s", job.id)
                await self.transfers.begin(job.id, job.file_sha256, job.file_bytes, Path(job.file_path),
                                           self.node.clock.time())

    async def _open_client(self, protocol: str) -> None:
        from node.sync.mqtt import BrokerSettings, connect_async, make_client

        c = self.config
        username = c.username if c.username is not None else (self.node_id if c.password is not None else None)
        self._settings = BrokerSettings(
            host=c.broker_host or "", port=c.broker_port, protocol=protocol, client_id=self.node_id,
            username=username, password=c.password, ca_file=c.tls_ca_file, cert_file=c.tls_cert_file,
            key_file=c.tls_key_file, tls=c.use_tls, keepalive_s=c.keepalive_s,
            session_expiry_s=c.session_expiry_s, reconnect_min_s=c.reconnect_min_s, reconnect_max_s=c.reconnect_max_s)
        client = make_client(self._settings)
        client.will_set(p.state_topic(self.node_id, "online"),
                        p.OnlineState(online=False, protocol_minor=p.PROTOCOL_MINOR).model_dump_json(),
                        qos=1, retain=True)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        self._client = client
        connect_async(client, self._settings)
        client.loop_start()

    async def stop(self) -> None:
        self._stopping = True
        if self._plan_writer is not None:
            await self._plan_writer      # the last plan report goes into the outbox before the node stops
        batch = self.batcher.flush(self.node.clock.time())
        if batch is not None:
            await self.outbox.put_telemetry(batch, self.node.clock.time())
        try:
            await self._save_meters()
        except Exception as exc:  # stopping anyway; the counters restart from their last saved value
            log.warning("sync: energy counters not saved: %s", exc)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        client = self._client
        if client is not None:
            if self.connected.is_set():
                info = client.publish(p.state_topic(self.node_id, "online"),
                                      p.OnlineState(online=False, t_s=self.node.clock.time(),
                                                    protocol_minor=p.PROTOCOL_MINOR, software=__version__)
                                      .model_dump_json(), qos=1, retain=True)
                await asyncio.to_thread(_wait_published, info, 2.0)
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)

    def status(self) -> dict[str, Any]:
        return {"online_configured": self.config.online, "connected": self.connected.is_set(),
                "connects": self.connects, "in_flight": len(self._sent), "outbox": self.outbox_stats,
                "transfers": self.transfers.status(), "chunk_retries": self.transfers.retries, **self.counters}

    # --- paho thread -> loop ------------------------------------------------------------------
    def _post(self, kind: str, data: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._queue.put_nowait, (kind, data))
            except RuntimeError:  # loop closed between the check and the call
                pass

    def _paho_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                      properties: Any) -> None:
        if reason_code.is_failure:
            self._post("connect_failed", str(reason_code))
            return
        client.subscribe(p.down_topic(self.node_id, "#"), qos=1)
        self._post("connected", bool(getattr(flags, "session_present", False)))

    def _paho_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                         properties: Any) -> None:
        self._post("disconnected", str(reason_code))

    def _paho_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._post("message", (message.topic, bytes(message.payload)))

    # --- the loop side ----------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            kind, data = await self._queue.get()
            try:
                if kind == "message":
                    await self._handle_message(*data)
                elif kind == "connected":
                    await self._on_connected(data)
                elif kind == "disconnected":
                    self.connected.clear()
                    await self._show_offline(True)
                    self._sent.clear()
                    log.info("sync: disconnected (%s)", data)
                elif kind == "connect_failed":
                    await self._on_connect_failed(data)
            except Exception:  # one bad message must not stop sync
                self.counters["bad_input"] += 1
                log.exception("sync: handling %s failed", kind)

    async def _on_connect_failed(self, reason: str) -> None:
        log.warning("sync: broker refused the connection: %s", reason)
        if self.config.protocol == "auto" and self._settings and self._settings.protocol == "5" \
                and "protocol" in reason.lower():
            log.warning("sync: falling back to MQTT 3.1.1")
            old = self._client
            if old is not None:
                old.disconnect()
                await asyncio.to_thread(old.loop_stop)
            await self._open_client("3.1.1")

    async def _show_offline(self, offline: bool) -> None:
        """Tell whoever shows it (the status LED, node/hw/led.py) that the hub is (un)reachable."""
        await self.node.send_event("sync_link", SyncLink(t_s=self.node.clock.time(), online=not offline))

    async def _on_connected(self, session_present: bool) -> None:
        self.connects += 1
        self.connected.set()
        await self._show_offline(False)
        self._sent.clear()
        log.info("sync: connected to %s:%s (session present: %s)", self.config.broker_host,
                 self.config.broker_port, session_present)
        now_s = self.node.clock.time()
        self._publish_state("online", p.OnlineState(online=True, t_s=now_s, protocol_minor=p.PROTOCOL_MINOR,
                                                    software=__version__), qos=1)
        for name, doc in self._state_docs.items():
            self._publish_state(name, doc)
        if self.config.ha_discovery:
            for topic, payload in discovery_messages(self.node_id):
                self._publish_raw(topic, payload, qos=1, retain=True)
        jobs = [p.JobVersion(job_id=j.id, version=j.version) for j in await self.jobs.list()
                if j.source == "hub" and j.state not in FINAL_STATES]
        self._publish(p.up_topic(self.node_id, "hello"),
                      p.Hello(node_id=self.node_id, t_s=now_s, protocol_minor=p.PROTOCOL_MINOR, jobs=jobs,
                              capabilities=self.capabilities, site=self.site, problems=list(self.node.problems)),
                      qos=1)
        self.transfers.resume_all()
        self._request_chunks()
        self._outbox_dirty.set()

    async def _tick(self) -> None:
        """Flush the outbox when told or every TICK_S; resend what the hub has not acked in time."""
        while not self._stopping:
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that races the
                # event (gh-86296), which left stop() waiting forever on this task
                async with asyncio.timeout(TICK_S):
                    await self._outbox_dirty.wait()
            except TimeoutError:
                pass
            self._outbox_dirty.clear()
            if time.monotonic() - self._stats_mono >= OUTBOX_STATS_S:
                self._stats_mono = time.monotonic()
                try:
                    self.outbox_stats = await self.outbox.stats()
                except Exception as exc:  # a status figure: never worth stopping sync for
                    log.warning("sync: outbox size unknown: %s", exc)
            if not self.connected.is_set():
                continue
            try:
                await self._flush_outbox()
                self._request_chunks()
            except Exception:
                log.exception("sync: outbox flush failed")

    async def _flush_outbox(self) -> None:
        now = time.monotonic()
        expired = [i for i, sent in self._sent.items() if now - sent >= self.config.ack_timeout_s]
        for msg_id in expired:
            del self._sent[msg_id]
        room = OUTBOX_WINDOW - len(self._sent)
        if room <= 0:
            return
        for row in await self.outbox.pending(room, exclude=frozenset(self._sent)):
            if not self.connected.is_set():
                return
            self._publish_raw(p.up_topic(self.node_id, row.kind), row.payload, qos=1)
            self._sent[row.id] = time.monotonic()
            self.counters["published"] += 1

    def _request_chunks(self) -> None:
        if not self.connected.is_set():
            return
        from node.sync.mqtt import publish_props

        props = publish_props(self._settings, 60) if self._settings else None
        for req in self.transfers.requests():
            self._publish_raw(p.up_topic(self.node_id, "chunk_req"), req.model_dump_json().encode(), qos=1,
                              properties=props)

    def _publish(self, topic: str, model: BaseModel, qos: int, retain: bool = False) -> None:
        self._publish_raw(topic, model.model_dump_json(exclude_none=True).encode(), qos, retain)

    def _publish_state(self, name: str, doc: BaseModel, qos: int = 0) -> None:
        """A retained state document with every field, null when unknown (protocol 1.1): a reader's
        template never meets an undefined field."""
        self._publish_raw(p.state_topic(self.node_id, name), doc.model_dump_json().encode(), qos, retain=True)

    def _publish_raw(self, topic: str, payload: bytes, qos: int, retain: bool = False,
                     properties: Any = None) -> None:
        client = self._client
        if client is None:
            return
        import paho.mqtt.client as mqtt  # loaded with the client already

        info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.debug("sync: publish to %s returned %s", topic, info.rc)

    # --- inbound ----------------------------------------------------------------------------
    async def _handle_message(self, topic: str, payload: bytes) -> None:
        parsed = p.parse_topic(topic)
        if parsed is None or parsed[0] != self.node_id or parsed[1] != "down":
            return
        kind = parsed[2]
        handler = {"ack": self._on_ack, "job": self._on_manifest, "command": self._on_command,
                   "key": self._on_key, "chunk": self._on_chunk}.get(kind)
        if handler is None:
            log.warning("sync: ignoring unknown message kind %r", kind)
            return
        try:
            await handler(payload)
        except (ValidationError, ValueError, UnicodeDecodeError) as exc:
            self.counters["bad_input"] += 1
            log.warning("sync: bad %s message set aside: %s", kind, str(exc).splitlines()[0] if str(exc) else exc)

    async def _on_ack(self, payload: bytes) -> None:
        ack = p.Ack.model_validate_json(payload)
        deleted = await self.outbox.ack(ack.ids)
        for msg_id in ack.ids:
            self._sent.pop(msg_id, None)
        self.counters["acked"] += deleted
        self._outbox_dirty.set()

    async def _note_hub_time(self, hub_time_s: float) -> None:
        now_s = self.node.clock.time()

        def _save(conn: Any) -> None:
            self.store.set_meta(conn, "sync.hub_time_s", repr(hub_time_s))
            self.store.set_meta(conn, "sync.hub_time_at_node_s", repr(now_s))

        await self.store.run(_save)
        await self.node.send_event("hub_time_observed", HubTimeObserved(hub_time_s=hub_time_s, node_t_s=now_s))

    async def _report_rejection(self, rejected: Rejected, what: str) -> None:
        self.counters["rejected"] += 1
        body = rejected.body or {}
        log.warning("sync: %s rejected: %s", what, rejected)
        job_id = body.get("job_id") if what == "manifest" else None
        if isinstance(job_id, str) and body.get("node_id") == self.node_id and len(job_id) <= 64:
            known = await self.jobs.get(job_id)
            if known is not None:
                if rejected.reason == "replayed":  # the hub resent a manifest we handled: answer again
                    await self._report_state(job_id)
                return
            await self.outbox.put("job_state", p.JobStateReport(
                node_id=self.node_id, t_s=self.node.clock.time(), job_id=job_id, version=0,
                node_state="rejected", wire_state=p.WireState.REJECTED, reason=str(rejected)),
                self.node.clock.time())
            self._outbox_dirty.set()
        command_id = body.get("command_id") if what == "command" else None
        if isinstance(command_id, str) and body.get("node_id") == self.node_id and len(command_id) == 32:
            previous = await self.inbox.answer(command_id)
            result = p.CommandResult(node_id=self.node_id, t_s=self.node.clock.time(), command_id=command_id,
                                     ok=False, detail=str(rejected))
            if previous is not None and rejected.reason == "replayed":
                result = p.CommandResult.model_validate_json(previous).model_copy(
                    update={"id": p.new_id(), "t_s": self.node.clock.time()})
            await self.outbox.put("command_result", result, self.node.clock.time())
            self._outbox_dirty.set()

    async def _report_state(self, job_id: str) -> None:
        job = await self.jobs.get(job_id)
        if job is None:
            return
        await self.outbox.put("job_state", p.JobStateReport(
            node_id=self.node_id, t_s=self.node.clock.time(), job_id=job.id, version=job.version,
            node_state=job.state.value, wire_state=p.wire_state(job.state), reason=job.reason),
            self.node.clock.time(), coalesce_key=f"state-resend:{job.id}")
        self._outbox_dirty.set()

    async def _on_manifest(self, payload: bytes) -> None:
        verifier, seqs = await self.inbox.verifier()
        try:
            manifest = verifier.open(payload, p.JobManifest, self.node.clock.time(), seqs)
        except Rejected as rejected:
            await self._report_rejection(rejected, "manifest")
            return
        await self._note_hub_time(manifest.hub_time_s)
        now_s = self.node.clock.time()
        if await self.jobs.get(manifest.job_id) is not None:
            await self.inbox.record(manifest.job_id, "job", manifest.seq, "duplicate", now_s)
            await self._report_state(manifest.job_id)
            return
        final_path = self.files_dir / f"{manifest.job_id}.gcode"
        job = await self.jobs.create(manifest.name, "hub", state=JobState.RECEIVED, priority=manifest.priority,
                                     file_path=str(final_path), file_sha256=manifest.file_sha256,
                                     file_bytes=manifest.file_bytes, deadline_s=manifest.deadline_s,
                                     job_id=manifest.job_id, reason="manifest from hub")
        await self.inbox.record(manifest.job_id, "job", manifest.seq, "accepted", now_s)
        unmet = manifest.requirements.unmet_by(self.capabilities) if self.capabilities else []
        if manifest.file_bytes > self.max_file_bytes:
            unmet.append(f"file of {manifest.file_bytes} bytes exceeds jobs.max_file_mb")
        elif (room := no_room_reason(self.files_dir, manifest.file_bytes, self.reserve_bytes)) is not None:
            unmet.append(room)
        if unmet:
            await self.jobs.transition(job.id, JobState.REJECTED, "requirements: " + "; ".join(unmet),
                                       expected_version=job.version)
            return
        job = await self.jobs.transition(job.id, JobState.DOWNLOADING, "pulling file from hub",
                                         expected_version=job.version)
        await self.transfers.begin(job.id, manifest.file_sha256, manifest.file_bytes, final_path, now_s)
        self._request_chunks()

    async def _on_chunk(self, payload: bytes) -> None:
        header, data = p.decode_chunk(payload)
        if header.error:
            if self.transfers.stall(header.job_id, header.error):
                log.warning("sync: hub cannot serve %s (%s); asking again after the next connect",
                            header.job_id, header.error)
            return
        row = self.transfers.row(header.job_id)
        if row is None or header.total_bytes != row.total_bytes:
            return
        self.counters["chunks"] += 1
        complete = await self.transfers.on_chunk(header.job_id, header.offset, data, self.node.clock.time())
        if complete:
            await self._finish_transfer(header.job_id)
        else:
            self._request_chunks()

    async def _finish_transfer(self, job_id: str) -> None:
        row = self.transfers.row(job_id)
        assert row is not None
        ok, actual = await self.transfers.finish(job_id)
        job = await self.jobs.get(job_id)
        if job is None or job.state != JobState.DOWNLOADING:
            await self.transfers.drop(job_id)
            return
        if ok:
            await self.transfers.drop(job_id)
            refusal = await self.gate.refusal(Path(row.final_path))
            if refusal is not None:
                log.warning("sync: hub job %s rejected: %s", job_id, refusal)
                await self.jobs.transition(job_id, JobState.REJECTED, refusal, expected_version=job.version)
                return
            await self.jobs.transition(job_id, JobState.QUEUED, "file verified (sha256) and passed the safety gate",
                                       expected_version=job.version)
        elif row.attempts < 2:
            log.warning("sync: %s sha256 %s != manifest %s; pulling it again", job_id, actual, row.file_sha256)
            await self.transfers.begin(job_id, row.file_sha256, row.total_bytes, Path(row.final_path),
                                       self.node.clock.time(), attempts=row.attempts + 1)
            self._request_chunks()
        else:
            await self.transfers.drop(job_id)
            await self.jobs.transition(job_id, JobState.REJECTED, f"file sha256 mismatch (got {actual[:12]}...)",
                                       expected_version=job.version)

    async def _on_command(self, payload: bytes) -> None:
        verifier, seqs = await self.inbox.verifier()
        try:
            command = verifier.open(payload, p.Command, self.node.clock.time(), seqs)
        except Rejected as rejected:
            await self._report_rejection(rejected, "command")
            return
        await self._note_hub_time(command.hub_time_s)
        previous = await self.inbox.answer(command.command_id)
        if previous is not None:
            result = p.CommandResult.model_validate_json(previous).model_copy(update={"id": p.new_id()})
        else:
            ok, detail = await self._execute(command.args)
            result = p.CommandResult(node_id=self.node_id, t_s=self.node.clock.time(),
                                     command_id=command.command_id, ok=ok, detail=detail)
            await self.inbox.record(command.command_id, "command", command.seq, result.model_dump_json(),
                                    self.node.clock.time())
        await self.outbox.put("command_result", result, self.node.clock.time())
        self._outbox_dirty.set()

    async def _execute(self, args: Any) -> tuple[bool, str]:
        """Turn a verified command into a call or an event; return (ok, detail).

        Cancel, pause, resume and plate cleared go through :mod:`node.jobcontrol`, the same dispatch
        as the CLI's; the hub names jobs by their exact id.
        """
        now_s = self.node.clock.time()
        if isinstance(args, (p.CancelArgs, p.PauseArgs, p.ResumeArgs)):
            verb: JobVerb = "cancel" if isinstance(args, p.CancelArgs) else (
                "pause" if isinstance(args, p.PauseArgs) else "resume")
            before = await self.jobs.get(args.job_id)
            if before is None:
                return False, f"no job {args.job_id}"
            try:
                moved = await run_job_command(self.job_control, self.jobs, verb, before.id, source="hub",
                                              expected_version=None if verb == "cancel" else args.expected_version)
            except (TransitionRefused, KeyError, TimeoutError) as exc:
                return False, error_text(exc)
            if verb == "cancel" and self.transfers.row(moved.id) is not None:
                await self.transfers.drop(moved.id)
            if moved.version == before.version:  # no runner here: the command went out as an event
                return True, f"{verb} requested"
            return True, f"{args.kind}{'led' if verb == 'cancel' else 'd'} at version {moved.version}"
        if isinstance(args, p.PlateClearedArgs):
            await self.job_control.set_plate_clear(True, source="hub")
            return True, "plate cleared"
        if isinstance(args, p.CloudForecastArgs):  # protocol 1.0's form, still accepted
            await self.node.send_event("cloud_forecast", CloudForecast(
                t_s=now_s, source="hub", points=[(pt.t_s, pt.cloud_pct) for pt in args.points]))
            return True, f"{len(args.points)} forecast points"
        if isinstance(args, p.ForecastArgs):
            fc = args.forecast
            await self.node.send_event("cloud_forecast", CloudForecast(
                t_s=now_s, source="hub", points=[(pt.t_utc.timestamp(), pt.cloud_cover_pct) for pt in fc.points],
                issued_s=fc.issued_at.timestamp(), latitude=fc.site.latitude, longitude=fc.site.longitude,
                provider=args.provider))
            log.info("sync: %s forecast issued %s, %d points", args.provider, fc.issued_at.isoformat(),
                     len(fc.points))
            return True, f"{args.provider} forecast issued {fc.issued_at.isoformat()}: {len(fc.points)} points"
        if isinstance(args, p.ConfigArgs):
            from node.config import ConfigError, parse_set

            try:
                for assignment in args.assignments:
                    parse_set(assignment)
            except ConfigError as exc:
                return False, str(exc)
            await self.node.send_event("config_change_requested", ConfigChangeRequested(
                assignments=list(args.assignments), source="hub"))
            return True, "config change requested"
        return False, f"unknown command {args!r}"

    async def _on_key(self, payload: bytes) -> None:
        verifier, seqs = await self.inbox.verifier()
        try:
            announcement = verifier.open(payload, p.KeyAnnouncement, self.node.clock.time(), seqs)
        except Rejected as rejected:
            if rejected.reason != "replayed":
                await self._report_rejection(rejected, "key announcement")
            return
        await self._note_hub_time(announcement.hub_time_s)
        load_public(announcement.new_public_key)  # ValueError (logged, set aside) if it is no key
        await self.inbox.rotate(announcement.new_public_key, announcement.retire_key_ids, self.node.clock.time())
        await self.inbox.record(None, "key", announcement.seq, "", self.node.clock.time())
        log.info("sync: now trusting hub key %s", announcement.new_public_key[:16])

    # --- node events -> outbox / retained state -----------------------------------------------
    async def _report_transitions(self) -> int:
        """Put every committed job transition not yet reported into the outbox; return how many.

        Reads ``job_transitions`` past a watermark kept in ``meta`` and writes the reports and the
        new watermark in one transaction.  So a kill between a transition's commit and its event
        loses nothing (the next call or the next start catches up), and nothing is reported twice.
        """
        energy = dict(self._energy_wh)
        node_id = self.node_id

        def _collect(conn: Any) -> tuple[int, list[str]]:
            finished: list[str] = []
            with transaction(conn):
                mark = int(self.store.get_meta(conn, TRANSITIONS_MARK, "0") or 0)
                rows = conn.execute(
                    "SELECT t.id AS tid, t.job_id, t.to_state, t.reason, t.version, t.t_s, j.created_s, j.started_s,"
                    " j.finished_s, j.file_sha256 FROM job_transitions t JOIN jobs j ON j.id = t.job_id"
                    " WHERE t.id > ? ORDER BY t.id", (mark,)).fetchall()
                for r in rows:
                    state = JobState(r["to_state"])
                    insert_report(conn, "job_state", p.JobStateReport(
                        node_id=node_id, t_s=r["t_s"], job_id=r["job_id"], version=r["version"],
                        node_state=state.value, wire_state=p.wire_state(state), reason=r["reason"]), r["t_s"])
                    if state in FINAL_STATES or state == JobState.FAILED:
                        started, ended = r["started_s"], r["t_s"]
                        filament_mm = _analysed_filament_mm(conn, r["file_sha256"])
                        insert_report(conn, "job_record", p.JobRecord(
                            node_id=node_id, t_s=r["t_s"], job_id=r["job_id"], outcome=p.wire_state(state),
                            node_state=state.value, created_s=r["created_s"], started_s=started, finished_s=ended,
                            duration_s=(ended - started) if started is not None else None,
                            energy_wh=round(energy[r["job_id"]], 3) if r["job_id"] in energy else None,
                            filament_mm=filament_mm if state == JobState.COMPLETED else None,
                            file_sha256=r["file_sha256"]), r["t_s"])
                        finished.append(r["job_id"])
                if rows:
                    self.store.set_meta(conn, TRANSITIONS_MARK, str(rows[-1]["tid"]))
            return len(rows), finished

        count, finished = await self.store.run(_collect)
        for job_id in finished:
            self._energy_wh.pop(job_id, None)
        if count:
            self._outbox_dirty.set()
        return count

    async def _on_job_state(self, event: JobStateChanged) -> None:
        await self._report_transitions()
        to_state = JobState(event.to_state)
        if to_state in ACTIVE_STATES:
            self._active_job = event.job_id
        elif self._active_job == event.job_id:
            self._active_job = None
        if to_state in FINAL_STATES or to_state == JobState.FAILED:
            self._progress_sent_s.pop(event.job_id, None)
        current = self._printer_doc()
        # the document names the printer's job: another job arriving or leaving the queue does not replace it
        # (Home Assistant's pause button keeps meaning the print under way, not a job just queued)
        if to_state in ACTIVE_STATES or current.job_id in (None, event.job_id):
            same_job = current.job_id == event.job_id
            self._update_state("printer", current.model_copy(update={
                "t_s": event.t_s, "job_id": event.job_id, "job_state": event.to_state, "job_version": event.version,
                "percent": 100.0 if to_state == JobState.COMPLETED else (current.percent if same_job else None)}),
                force=True)
        self._outbox_dirty.set()

    async def _on_progress(self, event: JobProgress) -> None:
        now_s = self.node.clock.time()
        current = self._printer_doc(printer="printing")
        self._update_state("printer", current.model_copy(update={
            "t_s": now_s, "job_id": event.job_id, "job_state": "printing", "percent": round(event.percent, 1),
            "job_version": current.job_version if current.job_id == event.job_id else None}))
        last = self._progress_sent_s.get(event.job_id)
        if last is None or time.monotonic() - last >= PROGRESS_REPORT_S:
            self._progress_sent_s[event.job_id] = time.monotonic()
            await self.outbox.put("job_progress", p.JobProgressReport(
                node_id=self.node_id, t_s=now_s, job_id=event.job_id, percent=event.percent,
                bytes_done=event.bytes_done, bytes_total=event.bytes_total, elapsed_s=max(0.0, event.elapsed_s)),
                now_s, coalesce_key=f"progress:{event.job_id}")
            self._outbox_dirty.set()

    async def _on_telemetry(self, sample: TelemetrySample) -> None:
        if sample.stale or sample.error:
            return
        watts = sample.printer_w
        if watts is not None and self._active_job is not None and self._last_power is not None:
            t_prev, w_prev = self._last_power
            if 0 < sample.t_s - t_prev < 3600:
                self._energy_wh[self._active_job] = self._energy_wh.get(self._active_job, 0.0) + \
                    (w_prev + watts) / 2 * (sample.t_s - t_prev) / 3600
        if watts is not None:
            self._last_power = (sample.t_s, watts)
        batch = self.batcher.add(sample.t_s, sample.model_dump())
        if batch is not None:
            await self.outbox.put_telemetry(batch, self.node.clock.time())
            self._outbox_dirty.set()
        self._integrate_meters(sample)
        doc = p.PowerState(t_s=sample.t_s, soc_pct=sample.soc_pct, pv_w=sample.pv_w, battery_v=sample.battery_v,
                           load_w=sample.load_w, pv_energy_wh=round(self._meters["pv_energy_wh"], 3),
                           printer_energy_wh=round(self._meters["printer_energy_wh"], 3))
        if self._state_due("power", doc):
            await self._save_meters()  # on disk before it is published: a restart never shows less
        self._update_state("power", doc)

    def _integrate_meters(self, sample: TelemetrySample) -> None:
        """Add the energy since the previous sample to the counters (trapezoids; gaps are not guessed)."""
        last = self._last_meter_sample
        self._last_meter_sample = (sample.t_s, sample.pv_w, sample.printer_w)
        if last is None or not 0 < sample.t_s - last[0] <= ENERGY_MAX_GAP_S:
            return
        dt_h = (sample.t_s - last[0]) / 3600.0
        for name, before, now in (("pv_energy_wh", last[1], sample.pv_w),
                                  ("printer_energy_wh", last[2], sample.printer_w)):
            if before is not None and now is not None:
                self._meters[name] += max(0.0, (before + now) / 2.0) * dt_h

    async def _load_meters(self) -> None:
        def _read(conn: Any) -> dict[str, float]:
            return {name: float(self.store.get_meta(conn, key, "0") or 0.0) for name, key in ENERGY_METERS.items()}

        self._meters = await self.store.run(_read)
        self._meters_saved = dict(self._meters)

    async def _save_meters(self) -> None:
        meters = dict(self._meters)
        if meters == self._meters_saved:
            return

        def _write(conn: Any) -> None:
            with transaction(conn):
                for name, key in ENERGY_METERS.items():
                    self.store.set_meta(conn, key, repr(meters[name]))

        await self.store.run(_write)
        self._meters_saved = meters

    def _state_due(self, name: str, doc: BaseModel) -> bool:
        """Would :meth:`_update_state` publish ``doc`` now (its pacing)?"""
        t_s = float(getattr(doc, "t_s", 0.0) or 0.0)
        last = self._state_sent_s.get(name)
        return self.connected.is_set() and not (last is not None and 0 <= t_s - last < self.config.state_interval_s)

    async def _on_printer(self, event: PrinterState) -> None:
        self._update_state("printer", self._printer_doc().model_copy(update={
            "t_s": self.node.clock.time(), "printer": event.state, "detail": event.detail or None}), force=True)

    async def _on_temperatures(self, event: Temperatures) -> None:
        """Temperatures ride in the printer document (paced like it: at most one every state_interval_s)."""
        self._update_state("printer", self._printer_doc().model_copy(update={
            "t_s": event.t_s, "hotend_c": round(event.hotend_c, 1), "hotend_target_c": event.hotend_target_c,
            "bed_c": round(event.bed_c, 1), "bed_target_c": event.bed_target_c}))

    def _printer_doc(self, printer: str = "unknown") -> p.PrinterStateDoc:
        """The printer document as last built (each event changes its own fields and keeps the others)."""
        current = self._state_docs.get("printer")
        if isinstance(current, p.PrinterStateDoc):
            return current
        return p.PrinterStateDoc(t_s=self.node.clock.time(), printer=printer)

    async def _on_plan(self, plan: PlanSummary) -> None:
        """The plan report goes to the outbox in the background, the newest one only (they coalesce there
        anyway): the planner awaits this handler, and at start-up a write queued behind the start's own
        store work held a re-plan for 1.6 s under a Pi Zero's CPU quota (issue #19)."""
        report = plan_report(self.node_id, plan)
        self._plan_pending = (report, plan.t_s)
        if self._plan_writer is None or self._plan_writer.done():
            self._plan_writer = asyncio.ensure_future(self._write_plans())
        self._update_state("plan", p.PlanState(t_s=plan.t_s, next_window_start_s=report.next_window_start_s,
                                               next_window_end_s=report.next_window_end_s,
                                               queue_length=report.queue_length, waiting_jobs=report.waiting_jobs,
                                               waiting_reason=waiting_reason(plan),
                                               forecast_source=plan.forecast_source), force=True)
        self._outbox_dirty.set()

    async def _write_plans(self) -> None:
        while self._plan_pending is not None:
            (report, t_s), self._plan_pending = self._plan_pending, None
            try:
                await self.outbox.put("plan", report, t_s, coalesce_key="plan")
            except Exception as exc:   # a full card: the next plan tries again; the planner is not held up
                log.error("sync: plan report not kept in the outbox (%s)", exc)
            self._outbox_dirty.set()

    def _update_state(self, name: str, doc: BaseModel, force: bool = False) -> None:
        """Keep the latest retained document; publish it at most every ``state_interval_s`` of its own time.

        The documents' ``t_s`` (sim time of the data) paces them, so a simulated day costs what a real
        day would; a document older than the last one sent restarts the pacing (clock jump).
        """
        self._state_docs[name] = doc
        t_s = float(getattr(doc, "t_s", 0.0) or 0.0)
        last = self._state_sent_s.get(name)
        if not force and last is not None and 0 <= t_s - last < self.config.state_interval_s:
            return
        if self.connected.is_set():
            self._state_sent_s[name] = t_s
            self._publish_state(name, doc)


def plan_report(node_id: str, plan: PlanSummary) -> p.PlanSummaryReport:
    """The planner's ``plan_updated`` summary, reduced to what the hub uses (pure)."""
    first = min(plan.planned, key=lambda j: j.start_s) if plan.planned else None
    if first is not None:
        start, end = first.start_s, first.end_s
    elif not plan.waiting and plan.soc_pct > plan.reserve_pct:
        start, end = plan.t_s, None  # idle with energy to spare: a new job could start now
    else:
        start = end = None
    return p.PlanSummaryReport(node_id=node_id, t_s=plan.t_s, next_window_start_s=start, next_window_end_s=end,
                               energy_available_wh=round(plan.pv_lost_wh, 1),
                               pv_forecast_wh=round(plan.pv_forecast_wh, 1), horizon_h=plan.horizon_h,
                               queue_length=len(plan.planned) + len(plan.waiting), waiting_jobs=len(plan.waiting),
                               soc_pct=plan.soc_pct)


def waiting_reason(plan: PlanSummary) -> str | None:
    """Why the next job does not start now, in the planner's words (None: nothing waits).

    A job the plan could not place says why; else a first planned start later than the next planning
    step is a wait for its energy window.
    """
    if plan.waiting:
        return f"{plan.waiting[0].name}: {plan.waiting[0].reason}"
    if plan.planned:
        first = min(plan.planned, key=lambda j: j.start_s)
        if first.start_s > plan.t_s + plan.step_s:
            return f"{first.name}: waits for its energy window ({first.reason})"
    return None


def _analysed_filament_mm(conn: Any, file_sha256: str | None) -> float | None:
    """Filament of the whole file from the G-code analysis cache (migration 2), if it was analysed.

    A completed job used what its file pushes; for a failed or cancelled one the node does not know
    how far it got in filament terms, so the record leaves it out.
    """
    if not file_sha256:
        return None
    try:
        row = conn.execute("SELECT result_json FROM gcode_analysis WHERE file_sha256 = ? ORDER BY created_s DESC"
                           " LIMIT 1", (file_sha256,)).fetchone()
    except Exception:  # no analysis table in this store (older schema): nothing to say
        return None
    if row is None:
        return None
    try:
        return round(float(sum(json.loads(row[0]).get("filament_mm") or [])), 1)
    except (ValueError, TypeError):
        return None


def _wait_published(info: mqtt.MQTTMessageInfo, timeout_s: float) -> None:
    try:
        info.wait_for_publish(timeout_s)
    except (RuntimeError, ValueError):
        pass


def state_json(payload: bytes) -> dict[str, Any]:
    """Parse a retained state document (what ``mosquitto_sub`` shows)."""
    value = json.loads(payload)
    if not isinstance(value, dict):
        raise ValueError("state document is not a JSON object")
    return value
