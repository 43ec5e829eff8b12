"""The reference hub: receives node reports, acks them after commit, assigns and signs jobs, serves chunks.

Two threads touch the ledger (under its lock): paho's network thread, which handles each node
message to the end (dedup, commit, then ack — the ack is the promise), and the pump thread, which
every ``PUMP_S`` assigns new jobs, signs and sends manifests and commands the CLI queued in the
ledger, and times out expired jobs.  The CLI (``submit``, ``cancel``) only writes rows; a running
``hub serve`` picks them up, so nothing needs the broker but the server.  A third thread, with a
forecast provider, fetches each node's cloud cover (``node.hub.forecasts``) and queues it as commands
for the pump; Home Assistant's buttons (``<root>/ha/command``) become commands the same way.

Several workers (``share_group``) share one PostgreSQL ledger and the fleet: they subscribe through
an MQTT v5 shared subscription (``$share/<group>/...``), so the broker hands each report to one of
them; a worker that dies with reports in hand loses nothing, because it acked none of them and the
node's outbox resends, and a resend that reaches a second worker is recognised by its report id.
Workers use clean sessions: a dead worker's session (and its share of the queue) goes with it.
Only the holder of the ``pump`` lease pumps; it re-takes the lease every round, another worker
takes over ``PUMP_LEASE_S`` after it stops.

Directory (``--dir``): ``hub.key`` (Ed25519 PEM), ``ledger.sqlite`` (unless ``ledger`` names a
PostgreSQL database), ``files/<sha256>.gcode``.  Every worker needs the same directory (one machine,
or the key and files on shared storage).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from node.hub.backends import open_ledger
from node.hub.dispatcher import Candidate, choose_node
from node.hub.forecasts import DEFAULT_INTERVAL_S, ForecastFeeder, ForecastProvider
from node.hub.ledger import Ledger
from node.sync import protocol as p
from node.sync.discovery import BUTTON_VERBS
from node.sync.mqtt import BrokerSettings, connect_async, make_client, publish_props
from node.sync.signing import SigningKey

log = logging.getLogger(__name__)

PUMP_S = 0.2
PUMP_LEASE_S = 5.0  # a dead pump holder is replaced after this long
KEY_FILE = "hub.key"
LEDGER_FILE = "ledger.sqlite"
DEFAULT_EXPIRY_S = 7 * 86400


def hub_paths(hub_dir: Path) -> tuple[Path, Path, Path]:
    return hub_dir / KEY_FILE, hub_dir / LEDGER_FILE, hub_dir / "files"


class Hub:
    def __init__(self, hub_dir: Path, broker: BrokerSettings, clock: Callable[[], float] = time.time,
                 command_expiry_s: float = 3600.0, ledger: str | Path | None = None,
                 share_group: str | None = None, forecast_provider: ForecastProvider | None = None,
                 forecast_interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.hub_dir = Path(hub_dir)
        self.clock = clock
        self.command_expiry_s = command_expiry_s
        key_path, ledger_path, self.files_dir = hub_paths(self.hub_dir)
        self.key_path = key_path
        self.key = SigningKey.load(key_path)
        self._key_mtime = key_path.stat().st_mtime_ns
        self.ledger: Ledger = open_ledger(ledger if ledger is not None else ledger_path)
        self.share_group = share_group
        if share_group is not None:
            if broker.protocol != "5":
                raise ValueError("shared subscriptions need MQTT v5 (--protocol 5)")
            if not share_group or any(c in share_group for c in "/+#"):
                raise ValueError(f"share group {share_group!r}: a name without / + #")
            # a killed worker's session must not keep a share of the reports queued for nobody
            broker = dataclasses.replace(broker, persistent=False)
        self.broker = broker
        self.worker_id = broker.client_id or f"hub-{os.getpid()}"
        self.client: mqtt.Client | None = None
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._pump_thread: threading.Thread | None = None
        self._lease_renew_at = 0.0
        self.counters = {"reports": 0, "duplicates": 0, "chunks_served": 0, "bad_input": 0, "messages": 0,
                         "published": 0, "manifests": 0, "ha_commands": 0}
        #: fetches each node's cloud-cover forecast (None: no provider, e.g. `hub serve --forecast none`)
        self.forecasts = ForecastFeeder(self.ledger, forecast_provider, self.worker_id, queue_command,
                                        interval_s=forecast_interval_s, clock=clock) \
            if forecast_provider is not None else None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        client = make_client(self.broker)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *a: self.connected.clear()
        client.on_message = self._on_message
        self.client = client
        connect_async(client, self.broker)
        client.loop_start()
        self._pump_thread = threading.Thread(target=self._pump_loop, name="hub-pump", daemon=True)
        self._pump_thread.start()
        if self.forecasts is not None:
            self.forecasts.start()

    def stop(self) -> None:
        self._stop.set()
        if self.forecasts is not None:
            self.forecasts.stop()
        if self._pump_thread is not None:
            self._pump_thread.join(5)
        try:
            self.ledger.release_lease("pump", self.worker_id)
        except Exception:  # stopping anyway; the lease expires on its own
            log.warning("hub: could not release the pump lease", exc_info=True)
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
        self.ledger.close()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        if reason_code.is_failure:
            log.warning("hub: broker refused: %s", reason_code)
            return
        client.subscribe([(self.subscription(f"{p.TOPIC_ROOT}/+/up/#"), 1),
                          (self.subscription(f"{p.TOPIC_ROOT}/+/state/#"), 1),
                          (self.subscription(f"{p.TOPIC_ROOT}/+/ha/#"), 1)])
        self.connected.set()
        log.info("hub: connected")

    def subscription(self, topic_filter: str) -> str:
        """The filter itself, or its shared form ``$share/<group>/<filter>`` for a worker of a group."""
        return topic_filter if self.share_group is None else f"$share/{self.share_group}/{topic_filter}"

    # --- inbound (paho thread) ----------------------------------------------------------------
    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        parsed = p.parse_topic(message.topic)
        if parsed is None:
            return
        node_id, direction, kind = parsed
        self.counters["messages"] += 1
        try:
            if direction == "state":
                self._on_state(node_id, kind, bytes(message.payload))
            elif direction == "up":
                self._on_up(node_id, kind, bytes(message.payload))
            elif direction == "ha":
                self._on_ha_command(node_id, kind, bytes(message.payload))
        except (ValidationError, ValueError, UnicodeDecodeError) as exc:
            self.counters["bad_input"] += 1
            log.warning("hub: bad %s from %s: %s", kind, node_id, str(exc).splitlines()[0])
        except Exception:
            self.counters["bad_input"] += 1
            log.exception("hub: handling %s from %s failed", kind, node_id)

    def _on_state(self, node_id: str, kind: str, payload: bytes) -> None:
        if not payload:
            return
        now = self.clock()
        with self.ledger.tx(durable=False) as conn:  # a retained document: the broker has it again
            conn.execute("INSERT INTO nodes(node_id) VALUES(?) ON CONFLICT DO NOTHING", (node_id,))
            if kind == "online":
                doc = p.OnlineState.model_validate_json(payload)
                conn.execute("UPDATE nodes SET online = ?, last_seen_s = ? WHERE node_id = ?",
                             (int(doc.online), now, node_id))
            elif kind == "power":
                power = p.PowerState.model_validate_json(payload)
                conn.execute("UPDATE nodes SET soc_pct = ?, pv_w = ?, battery_v = ?, last_seen_s = ? WHERE node_id = ?",
                             (power.soc_pct, power.pv_w, power.battery_v, now, node_id))
            elif kind == "printer":
                self._store_printer_doc(conn, node_id, p.PrinterStateDoc.model_validate_json(payload), now)
            elif kind == "plan":
                plan = p.PlanState.model_validate_json(payload)
                conn.execute("UPDATE nodes SET next_window_start_s = ?, next_window_end_s = ?, queue_length = ?"
                             " WHERE node_id = ?", (plan.next_window_start_s, plan.next_window_end_s,
                                                    plan.queue_length, node_id))

    @staticmethod
    def _store_printer_doc(conn: Any, node_id: str, doc: p.PrinterStateDoc, now: float) -> None:
        """The printer document as the fleet view reads it: the job it names *with that job's state* (a
        cancelled job is not the node's current job) and version (a Home Assistant pause or resume names
        it), the printer's detail and temperatures."""
        conn.execute("UPDATE nodes SET printer = ?, current_job = ?, job_state = ?, job_version = ?, percent = ?,"
                     " printer_detail = ?, hotend_c = ?, hotend_target_c = ?, bed_c = ?, bed_target_c = ?,"
                     " state_t_s = ?, last_seen_s = ? WHERE node_id = ?",
                     (doc.printer, doc.job_id, doc.job_state, doc.job_version, doc.percent, doc.detail, doc.hotend_c,
                      doc.hotend_target_c, doc.bed_c, doc.bed_target_c, doc.t_s, now, node_id))

    def _on_up(self, node_id: str, kind: str, payload: bytes) -> None:
        if kind == "hello":
            self._on_hello(node_id, p.Hello.model_validate_json(payload))
            return
        if kind == "chunk_req":
            self._serve_chunk(node_id, p.ChunkRequest.model_validate_json(payload))
            return
        if kind not in p.OUTBOX_KINDS:
            raise ValueError(f"unknown up kind {kind!r}")
        report: p.Report = (p.decode_telemetry(payload) if kind == "telemetry"
                            else p.UP_MESSAGES[kind].model_validate_json(payload))  # type: ignore[assignment]
        if report.node_id != node_id:
            raise ValueError(f"report names node {report.node_id} on {node_id}'s topic")
        now = self.clock()
        with self.ledger.tx() as conn:
            fresh = conn.execute("INSERT INTO received(node_id, msg_id, kind, t_s) VALUES(?,?,?,?)"
                                 " ON CONFLICT DO NOTHING", (node_id, report.id, kind, now)).rowcount == 1
            if fresh:
                conn.execute("INSERT INTO nodes(node_id) VALUES(?) ON CONFLICT DO NOTHING", (node_id,))
                conn.execute("UPDATE nodes SET last_seen_s = ? WHERE node_id = ?", (now, node_id))
                getattr(self, f"_apply_{kind}")(conn, node_id, report)
        self.counters["reports" if fresh else "duplicates"] += 1
        self._publish(p.down_topic(node_id, "ack"), p.Ack(ids=[report.id], hub_time_s=now).model_dump_json())

    def _apply_job_state(self, conn: Any, node_id: str, r: p.JobStateReport) -> None:
        conn.execute("INSERT INTO job_events(job_id, version, node_state, wire_state, reason, t_s, msg_id)"
                     " VALUES(?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                     (r.job_id, r.version, r.node_state, r.wire_state.value, r.reason, r.t_s, r.id))
        # one conditional statement, not read-then-write: two workers filing versions 2 and 3 at once must
        # leave 3 (PostgreSQL re-checks the WHERE on the row the other transaction committed)
        conn.execute("UPDATE jobs SET version = ?, node_state = ?, wire_state = ?, reason = ?, updated_s = ?"
                     " WHERE job_id = ? AND node_id = ? AND (version < ? OR (version = 0 AND ? = 0))",
                     (r.version, r.node_state, r.wire_state.value, r.reason, self.clock(), r.job_id, node_id,
                      r.version, r.version))

    def _apply_job_progress(self, conn: Any, node_id: str, r: p.JobProgressReport) -> None:
        # moved_s: when the percent last changed (a print that stands still is stalled: node/hub/fleet.py)
        conn.execute("INSERT INTO progress(job_id, node_id, percent, t_s, moved_s) VALUES(?,?,?,?,?)"
                     " ON CONFLICT(job_id) DO UPDATE SET percent = excluded.percent, t_s = excluded.t_s,"
                     " moved_s = CASE WHEN excluded.percent <> progress.percent OR progress.moved_s IS NULL"
                     " THEN excluded.t_s ELSE progress.moved_s END WHERE excluded.t_s >= progress.t_s",
                     (r.job_id, node_id, r.percent, r.t_s, r.t_s))

    def _apply_job_record(self, conn: Any, node_id: str, r: p.JobRecord) -> None:
        conn.execute("INSERT INTO job_records(job_id, node_id, outcome, record) VALUES(?,?,?,?) ON CONFLICT(job_id)"
                     " DO UPDATE SET node_id = excluded.node_id, outcome = excluded.outcome, record = excluded.record",
                     (r.job_id, node_id, r.outcome.value, r.model_dump_json()))

    def _apply_plan(self, conn: Any, node_id: str, r: p.PlanSummaryReport) -> None:
        conn.execute("UPDATE nodes SET next_window_start_s = ?, next_window_end_s = ?, queue_length = ?,"
                     " soc_pct = COALESCE(?, soc_pct) WHERE node_id = ?",
                     (r.next_window_start_s, r.next_window_end_s, r.queue_length, r.soc_pct, node_id))

    def _apply_telemetry(self, conn: Any, node_id: str, batch: p.TelemetryBatch) -> None:
        for row in p.telemetry_rows(batch):
            conn.execute("INSERT INTO telemetry(node_id, t_s, pv_w, pv_v, battery_v, battery_a, load_w,"
                         " printer_w, soc_pct, level) VALUES(?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                         (node_id, row["t_s"], row.get("pv_w"), row.get("pv_v"), row.get("battery_v"),
                          row.get("battery_a"), row.get("load_w"), row.get("printer_w"), row.get("soc_pct"),
                          batch.level))

    def _apply_command_result(self, conn: Any, node_id: str, r: p.CommandResult) -> None:
        conn.execute("UPDATE commands SET ok = ?, detail = ?, answered_s = ? WHERE command_id = ? AND node_id = ?",
                     (int(r.ok), r.detail, self.clock(), r.command_id, node_id))

    def _on_hello(self, node_id: str, hello: p.Hello) -> None:
        if hello.node_id != node_id:
            raise ValueError(f"hello names {hello.node_id} on {node_id}'s topic")
        for problem in hello.problems:
            log.warning("hub: node %s started with a problem: %s", node_id, problem)
        now = self.clock()
        with self.ledger.tx(durable=False) as conn:  # the node says hello again after every connect
            conn.execute("INSERT INTO nodes(node_id) VALUES(?) ON CONFLICT DO NOTHING", (node_id,))
            conn.execute("UPDATE nodes SET online = 1, last_seen_s = ?, capabilities = COALESCE(?, capabilities),"
                         " site = COALESCE(?, site) WHERE node_id = ?",
                         (now, hello.capabilities.model_dump_json() if hello.capabilities else None,
                          hello.site.model_dump_json() if hello.site else None, node_id))
            manifests = [r["manifest"] for r in conn.execute(
                "SELECT manifest FROM jobs WHERE node_id = ? AND manifest IS NOT NULL AND version = 0"
                " AND wire_state NOT IN ('REJECTED', 'CANCELED', 'TIMED_OUT', 'SUCCEEDED')", (node_id,))]
            commands = conn.execute("SELECT kind, signed FROM commands WHERE node_id = ? AND signed IS NOT NULL"
                                    " AND answered_s IS NULL AND (expires_s IS NULL OR expires_s > ?)",
                                    (node_id, now)).fetchall()
        self._note_protocol(node_id, hello)
        for manifest in manifests:
            self._publish(p.down_topic(node_id, "job"), manifest)
        for row in commands:
            self._publish(p.down_topic(node_id, "key" if row["kind"] == "key" else "command"), row["signed"])

    def _note_protocol(self, node_id: str, hello: p.Hello) -> None:
        """Keep the minor version the node speaks; a node back online gets a forecast at once if due."""
        with self.ledger.tx(durable=False) as conn:
            conn.execute("UPDATE nodes SET protocol_minor = ? WHERE node_id = ?", (hello.protocol_minor, node_id))
        if self.forecasts is not None:
            self.forecasts.wake.set()

    def _on_ha_command(self, node_id: str, kind: str, payload: bytes) -> None:
        """A Home Assistant button: ``pause``/``resume``/``cancel`` of the node's current job, signed here.

        Nodes act only on signed commands, and only the hub holds the key, so HA publishes a plain verb on
        ``printnode/v1/<node>/ha/command`` and the hub queues the Command (the pump signs and sends it).
        Pause and resume name the job's version from ``state/printer``: a press that raced a change of
        the job is refused by the node, not applied to a state the person did not see.
        """
        if kind != "command":
            raise ValueError(f"unknown Home Assistant topic ha/{kind}")
        verb = payload.decode("utf-8", errors="replace").strip().strip('"').lower()
        if verb not in BUTTON_VERBS:
            raise ValueError(f"Home Assistant sent {verb[:40]!r}; the buttons send {', '.join(BUTTON_VERBS)}")
        row = self.ledger.read(lambda c: c.execute("SELECT current_job, job_version FROM nodes WHERE node_id = ?",
                                                   (node_id,)).fetchone())
        if row is None or not row["current_job"]:
            log.warning("hub: Home Assistant pressed %s for %s, which has no current job", verb, node_id)
            return
        args: dict[str, Any] = {"kind": verb, "job_id": row["current_job"]}
        if verb != "cancel":
            if row["job_version"] is None:
                log.warning("hub: Home Assistant pressed %s for %s, whose job version is unknown yet", verb, node_id)
                return
            args["expected_version"] = int(row["job_version"])
        command_id = queue_command(self.ledger, node_id, args, self.clock())
        self.counters["ha_commands"] += 1
        log.info("hub: Home Assistant %s of %s on %s queued as command %s", verb, row["current_job"], node_id,
                 command_id[:8])

    def _serve_chunk(self, node_id: str, req: p.ChunkRequest) -> None:
        row = self.ledger.read(lambda c: c.execute(
            "SELECT file_path, file_bytes FROM jobs WHERE job_id = ? AND node_id = ?",
            (req.job_id, node_id)).fetchone())
        header = p.ChunkReply(job_id=req.job_id, offset=req.offset, length=0, total_bytes=0, req_id=req.req_id)
        data = b""
        if row is None:
            header.error = "no such job for this node"
        elif req.offset >= row["file_bytes"]:
            header.error = "offset beyond the end of the file"
        else:
            with open(row["file_path"], "rb") as fh:
                fh.seek(req.offset)
                data = fh.read(min(req.length, row["file_bytes"] - req.offset))
            header.length, header.total_bytes = len(data), row["file_bytes"]
        self.counters["chunks_served"] += 1
        self._publish(p.down_topic(node_id, "chunk"), p.encode_chunk(header, data), qos=0,
                      properties=publish_props(self.broker, 60))

    def _publish(self, topic: str, payload: str | bytes, qos: int = 1, properties: Any = None) -> None:
        if self.client is not None:
            self.client.publish(topic, payload, qos=qos, properties=properties)
            self.counters["published"] += 1

    # --- pump thread --------------------------------------------------------------------------
    def _pump_loop(self) -> None:
        while not self._stop.wait(PUMP_S):
            try:
                self.pump()
            except Exception:
                log.exception("hub: pump failed")

    def pump(self) -> None:
        """Reload a rotated key; assign, sign and send new jobs and commands; time out expired jobs.

        Only the holder of the ``pump`` lease runs it; inside, each job and command is claimed by a
        conditional update (``WHERE hub_state = 'new'``, ``WHERE sent = 0``) that only one
        transaction can win, and PostgreSQL skips rows another transaction has locked, so even a
        lease that lapsed under a stalled worker cannot produce two manifests for one job.
        """
        mtime = self.key_path.stat().st_mtime_ns
        if mtime != self._key_mtime:
            self.key, self._key_mtime = SigningKey.load(self.key_path), mtime
            log.info("hub: signing with key %s", self.key.key_id)
        now = self.clock()
        if now >= self._lease_renew_at:  # renewed at half its life, not every round: a commit each time
            if not self.ledger.try_lease("pump", self.worker_id, now, PUMP_LEASE_S):
                return
            self._lease_renew_at = now + PUMP_LEASE_S / 2
        lock_rows = " FOR UPDATE SKIP LOCKED" if self.ledger.dialect == "postgresql" else ""
        out: list[tuple[str, str]] = []
        with self.ledger.tx() as conn:
            conn.execute("UPDATE jobs SET wire_state = 'TIMED_OUT', reason = 'expired before the node took it',"
                         " updated_s = ? WHERE expires_s < ? AND version = 0"
                         " AND wire_state NOT IN ('REJECTED', 'CANCELED', 'TIMED_OUT', 'SUCCEEDED')", (now, now))
            new_jobs = conn.execute("SELECT * FROM jobs WHERE hub_state = 'new' AND wire_state = 'QUEUED'"
                                    " ORDER BY priority DESC, created_s" + lock_rows).fetchall()
            candidates = self._candidates(conn) if any(j["requested_node"] is None for j in new_jobs) else []
            for job in new_jobs:
                node_id = job["requested_node"] or self._choose(conn, job, candidates, now)
                if node_id is None:
                    continue
                if conn.execute("UPDATE jobs SET hub_state = 'signing' WHERE job_id = ? AND hub_state = 'new'",
                                (job["job_id"],)).rowcount != 1:
                    continue  # another worker took it
                manifest = p.JobManifest(
                    node_id=node_id, seq=self.ledger.next_seq(conn, node_id), issued_s=now,
                    expires_s=job["expires_s"], hub_time_s=now, job_id=job["job_id"], name=job["name"],
                    file_sha256=job["file_sha256"], file_bytes=job["file_bytes"],
                    requirements=p.PrinterRequirements.model_validate_json(job["requirements"]),
                    priority=job["priority"], deadline_s=job["deadline_s"], energy_wh=job["energy_wh"])
                signed = self.key.sign(manifest).model_dump_json()
                # reason = '': a refusal of an earlier round ("no eligible node: ...") no longer holds
                conn.execute("UPDATE jobs SET node_id = ?, manifest = ?, hub_state = 'sent', reason = '', updated_s = ?"
                             " WHERE job_id = ?", (node_id, signed, now, job["job_id"]))
                out.append((p.down_topic(node_id, "job"), signed))
            for cmd in conn.execute("SELECT * FROM commands WHERE sent = 0" + lock_rows).fetchall():
                if conn.execute("UPDATE commands SET sent = 1 WHERE command_id = ? AND sent = 0",
                                (cmd["command_id"],)).rowcount != 1:
                    continue
                signed = cmd["signed"]
                if signed is None:
                    expires = now + self.command_expiry_s
                    command = p.Command(node_id=cmd["node_id"], seq=self.ledger.next_seq(conn, cmd["node_id"]),
                                        issued_s=now, expires_s=expires, hub_time_s=now,
                                        command_id=cmd["command_id"], args=json.loads(cmd["args"]))
                    signed = self.key.sign(command).model_dump_json()
                    conn.execute("UPDATE commands SET signed = ?, expires_s = ? WHERE command_id = ?",
                                 (signed, expires, cmd["command_id"]))
                out.append((p.down_topic(cmd["node_id"], "key" if cmd["kind"] == "key" else "command"), signed))
        self.counters["manifests"] += sum(1 for topic, _ in out if topic.endswith("/down/job"))
        for topic, payload in out:
            self._publish(topic, payload)

    def _candidates(self, conn: Any) -> list[Candidate]:
        """Every node with its open-job count, in one query (the pump runs it once per round, not per job)."""
        rows = conn.execute(
            "SELECT n.node_id, n.capabilities, n.next_window_start_s, n.online, COALESCE(q.open, 0) AS queue"
            " FROM nodes n LEFT JOIN (SELECT node_id, COUNT(*) AS open FROM jobs"
            " WHERE wire_state IN ('QUEUED', 'IN_PROGRESS') AND node_id IS NOT NULL GROUP BY node_id) q"
            " ON q.node_id = n.node_id").fetchall()
        return [Candidate(n["node_id"],
                          p.PrinterCapabilities.model_validate_json(n["capabilities"]) if n["capabilities"] else None,
                          n["next_window_start_s"], bool(n["online"]), int(n["queue"])) for n in rows]

    def _choose(self, conn: Any, job: Any, candidates: list[Candidate], now: float) -> str | None:
        chosen, refused = choose_node(p.PrinterRequirements.model_validate_json(job["requirements"]),
                                      candidates, now)
        if chosen is None:
            reason = "no eligible node: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in refused.items())
            conn.execute("UPDATE jobs SET reason = ? WHERE job_id = ?", (reason[:500], job["job_id"]))
            return None
        for i, c in enumerate(candidates):  # the next job of this round sees the longer queue
            if c.node_id == chosen:
                candidates[i] = dataclasses.replace(c, queue_length=c.queue_length + 1)
        return chosen


# --- ledger operations used by the CLI (no broker needed) --------------------------------------
def submit_job(ledger: Ledger, files_dir: Path, source: Path, *, name: str | None = None,
               node_id: str | None = None, requirements: p.PrinterRequirements | None = None,
               priority: int = 0, deadline_s: float | None = None, expires_s: float | None = None,
               energy_wh: float | None = None, now_s: float | None = None) -> str:
    """Copy the file into the hub's store (named by sha256) and queue the job for the pump."""
    import hashlib
    import shutil

    now = time.time() if now_s is None else now_s
    digest = hashlib.sha256()
    with open(source, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    sha = digest.hexdigest()
    size = source.stat().st_size
    if size == 0:
        raise ValueError(f"{source}: empty file")
    files_dir.mkdir(parents=True, exist_ok=True)
    stored = files_dir / f"{sha}.gcode"
    if not stored.exists():
        tmp = stored.with_suffix(".tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, stored)
    job_id = p.new_id()[:12]
    with ledger.tx() as conn:
        conn.execute("INSERT INTO jobs(job_id, name, requested_node, file_path, file_sha256, file_bytes, requirements,"
                     " priority, deadline_s, expires_s, energy_wh, created_s, updated_s)"
                     " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (job_id, name or source.stem, node_id, str(stored), sha, size,
                      (requirements or p.PrinterRequirements()).model_dump_json(), priority, deadline_s,
                      expires_s if expires_s is not None else now + DEFAULT_EXPIRY_S, energy_wh, now, now))
    return job_id


def queue_command(ledger: Ledger, node_id: str, args: dict[str, Any], now_s: float | None = None) -> str:
    command_id = p.new_id()
    with ledger.tx() as conn:
        conn.execute("INSERT INTO commands(command_id, node_id, kind, args, created_s) VALUES(?,?,?,?,?)",
                     (command_id, node_id, args["kind"], json.dumps(args), time.time() if now_s is None else now_s))
    return command_id


def cancel_job(ledger: Ledger, job_ref: str) -> tuple[str, str]:
    """Cancel on the hub: an unassigned job at once; an assigned one by a signed command. Returns (job, how)."""
    with ledger.tx() as conn:
        rows = conn.execute("SELECT * FROM jobs WHERE job_id LIKE ?", (job_ref.replace("%", "") + "%",)).fetchall()
        if len(rows) != 1:
            raise KeyError(f"no job {job_ref!r}" if not rows else f"{job_ref!r} matches {len(rows)} jobs")
        job = rows[0]
        if job["wire_state"] in ("SUCCEEDED", "REJECTED", "CANCELED", "TIMED_OUT"):
            raise ValueError(f"job {job['job_id']} is already {job['wire_state']}")
        if job["node_id"] is None:
            conn.execute("UPDATE jobs SET wire_state = 'CANCELED', hub_state = 'cancelled',"
                         " reason = 'cancelled on the hub before assignment' WHERE job_id = ?", (job["job_id"],))
            return job["job_id"], "cancelled before assignment"
    queue_command(ledger, job["node_id"], {"kind": "cancel", "job_id": job["job_id"]})
    return job["job_id"], f"cancel sent to {job['node_id']}"


def announce_key(ledger: Ledger, old_key: SigningKey, new_key: SigningKey, retire_old: bool = True,
                 now_s: float | None = None, expiry_s: float = 30 * 86400) -> int:
    """Queue, for every known node, the new key signed by the old one; returns how many."""
    now = time.time() if now_s is None else now_s
    count = 0
    with ledger.tx() as conn:
        for (node_id,) in conn.execute("SELECT node_id FROM nodes").fetchall():
            body = p.KeyAnnouncement(node_id=node_id, seq=ledger.next_seq(conn, node_id), issued_s=now,
                                     expires_s=now + expiry_s, hub_time_s=now, new_public_key=new_key.public_hex,
                                     retire_key_ids=[old_key.key_id] if retire_old else [])
            conn.execute("INSERT INTO commands(command_id, node_id, kind, args, signed, expires_s, created_s)"
                         " VALUES(?,?,?,?,?,?,?)", (p.new_id(), node_id, "key", "{}",
                                                    old_key.sign(body).model_dump_json(), now + expiry_s, now))
            count += 1
    return count


def fleet_status(ledger: Ledger) -> list[dict[str, Any]]:
    """The first ``hub status`` rows, now read through node/hub/fleet.py (where the current job and the queue
    are decided; ``printnode hub nodes`` shows the rest)."""
    from node.hub.fleet import list_nodes

    return [{"node_id": n.node_id, "online": n.online, "soc_pct": n.soc_pct, "pv_w": n.pv_w, "queue": n.queue_length,
             "current_job": n.current_job, "printer": n.printer, "percent": n.percent, "last_seen_s": n.last_seen_s,
             "next_window_start_s": n.next_window_start_s} for n in list_nodes(ledger)]
