"""A hub written from docs/protocol.md alone: paho-mqtt, cryptography and the standard library.

It imports nothing from the ``node`` package (``test_outside_client.py`` checks that).  What it knows
of the protocol it reads from the document at run time:

* the field tables (``#### `Name` `` followed by a ``| field | type | required | meaning |`` table):
  every message it receives is checked against its table (no unknown field, every required field,
  types as the table names them) and every message it builds is checked the same way before it
  goes out, so a document that drifts from what the node sends or accepts fails;
* the telemetry preset dictionary (the ```` ```base64 telemetry-zdict ```` block).

The rest — topics, the envelope, Ed25519 over the bytes of ``signed``, the chunk frame, the
decoding of a telemetry batch — is written here as the document describes it.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = "printnode/v1"


# --- what the document says --------------------------------------------------------------------
@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    required: bool


@dataclass
class ProtocolDoc:
    tables: dict[str, dict[str, FieldSpec]]
    zdict: bytes

    @classmethod
    def read(cls, path: Path) -> ProtocolDoc:
        text = path.read_text(encoding="utf-8")
        return cls(parse_tables(text), parse_zdict(text))

    # --- checking a document against its table ---
    def check(self, name: str, doc: Any) -> None:
        """Raise ValueError naming the first difference between ``doc`` and the table of ``name``."""
        table = self.tables.get(name)
        if table is None:
            raise ValueError(f"docs/protocol.md has no table for {name}")
        if not isinstance(doc, dict):
            raise ValueError(f"{name} is not a JSON object")
        unknown = set(doc) - set(table)
        if unknown:
            raise ValueError(f"{name} carries fields the document does not list: {sorted(unknown)}")
        for spec in table.values():
            if spec.name not in doc:
                if spec.required:
                    raise ValueError(f"{name} lacks the required field {spec.name}")
                continue
            if not self.matches(spec.type, doc[spec.name]):
                raise ValueError(f"{name}.{spec.name} = {doc[spec.name]!r} is not {spec.type}")

    def matches(self, type_text: str, value: Any) -> bool:
        """Does ``value`` fit a type written as the document writes them (see its legend)?"""
        alternatives = _split_or(type_text)
        return any(self._matches_one(alt, value) for alt in alternatives)

    def _matches_one(self, t: str, value: Any) -> bool:
        t = t.strip()
        if t.startswith("(") and t.endswith(")"):
            return self.matches(t[1:-1], value)
        if t == "null":
            return value is None
        if t.startswith('"') and t.endswith('"'):
            return value == t[1:-1]
        if t == "string" or t.startswith("string ("):
            if not isinstance(value, str):
                return False
            listed = re.fullmatch(r"string \((.+)\)", t)
            if listed and "ISO 8601" not in listed.group(1):
                return value in [v.strip() for v in listed.group(1).split(",")]
            return True
        if t == "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        if t == "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        if t == "boolean":
            return isinstance(value, bool)
        if t.startswith("array of "):
            return isinstance(value, list) and all(self.matches(t[len("array of "):], v) for v in value)
        if t.startswith("object of "):
            return isinstance(value, dict) and all(self.matches(t[len("object of "):], v) for v in value.values())
        if t.startswith("[") and t.endswith("]"):
            parts = [x.strip() for x in t[1:-1].split(",")]
            return isinstance(value, list) and len(value) == len(parts) and all(
                self.matches(p, v) for p, v in zip(parts, value, strict=True))
        if t in self.tables:
            try:
                self.check(t, value)
            except ValueError:
                return False
            return True
        raise ValueError(f"docs/protocol.md uses a type this client cannot read: {t!r}")


def _split_or(type_text: str) -> list[str]:
    """Split ``a or b or null`` at top level (not inside ``[...]`` or ``(...)``)."""
    parts, depth, current = [], 0, ""
    tokens = re.split(r"(\s+or\s+|[\[\]()])", type_text)
    for token in tokens:
        if token in ("[", "("):
            depth += 1
        elif token in ("]", ")"):
            depth -= 1
        if depth == 0 and re.fullmatch(r"\s+or\s+", token or ""):
            parts.append(current)
            current = ""
        else:
            current += token or ""
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_tables(text: str) -> dict[str, dict[str, FieldSpec]]:
    """Every ``#### `Name` `` heading followed by a field table."""
    tables: dict[str, dict[str, FieldSpec]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        heading = re.fullmatch(r"####\s+`(\w+)`\s*", line)
        if not heading:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("|"):
            j += 1
        header = [c.strip() for c in lines[j].strip("|").split("|")]
        if header[:3] != ["field", "type", "required"]:
            raise ValueError(f"the table under {heading.group(1)} does not start with field | type | required")
        fields: dict[str, FieldSpec] = {}
        for row in lines[j + 2:]:
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            name = cells[0].strip("`")
            fields[name] = FieldSpec(name, cells[1], cells[2] == "yes")
        tables[heading.group(1)] = fields
    return tables


def parse_zdict(text: str) -> bytes:
    block = re.search(r"```base64 telemetry-zdict\n(.*?)```", text, re.S)
    if block is None:
        raise ValueError("docs/protocol.md has no ```base64 telemetry-zdict block")
    return base64.b64decode("".join(block.group(1).split()), validate=True)


# --- the hub ------------------------------------------------------------------------------------
@dataclass
class Received:
    topic: str
    kind: str
    doc: Any


@dataclass
class OutsideHub:
    """Just enough of a hub: sign and send manifests, serve chunks, ack reports, collect what arrives."""

    protocol: ProtocolDoc
    node_id: str
    files: dict[str, bytes] = field(default_factory=dict)  # job id -> file bytes
    inbox: list[Received] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # messages that did not match the document
    seq: int = 0

    def __post_init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_hex = raw.hex()
        self.key_id = self.public_hex[:16]
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"outside-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.client.on_connect = lambda *a: self.connected.set()

    def start(self, host: str, port: int) -> None:
        self.client.connect(host, port)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError("the broker did not accept the outside hub")
        base = f"{ROOT}/{self.node_id}"
        self.client.subscribe([(f"{base}/up/#", 1), (f"{base}/state/#", 1)])

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # --- inbound ---
    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        if len(parts) != 5:
            return
        direction, kind, payload = parts[3], parts[4], bytes(message.payload)
        try:
            if direction == "state":
                name = {"online": "OnlineState", "power": "PowerState", "printer": "PrinterStateDoc",
                        "plan": "PlanState"}[kind]
                doc = json.loads(payload)
                self.protocol.check(name, doc)
                missing = set(self.protocol.tables[name]) - set(doc)
                if missing:  # 1.1: state documents carry every field, null when unknown
                    raise ValueError(f"{name} leaves out {sorted(missing)}")
            elif kind == "telemetry":
                doc = self.decode_telemetry(payload)
            else:
                name = {"hello": "Hello", "job_state": "JobStateReport", "job_progress": "JobProgressReport",
                        "job_record": "JobRecord", "plan": "PlanSummaryReport", "command_result": "CommandResult",
                        "chunk_req": "ChunkRequest"}[kind]
                doc = json.loads(payload)
                self.protocol.check(name, doc)
        except (ValueError, KeyError) as exc:
            with self._lock:
                self.problems.append(f"{message.topic}: {exc}")
            return
        if direction == "up" and kind == "chunk_req":
            self.serve_chunk(doc)
        elif direction == "up" and kind != "hello":
            self.send("ack", {"ids": [doc["id"]], "hub_time_s": time.time()}, "Ack")
        with self._lock:
            self.inbox.append(Received(message.topic, kind, doc))

    def received(self, kind: str) -> list[Any]:
        with self._lock:
            return [r.doc for r in self.inbox if r.kind == kind]

    # --- outbound ---
    def send(self, kind: str, doc: dict[str, Any], table: str, qos: int = 1) -> None:
        self.protocol.check(table, doc)
        self.client.publish(f"{ROOT}/{self.node_id}/down/{kind}", json.dumps(doc), qos=qos)

    def signed(self, body: dict[str, Any], table: str, key: Ed25519PrivateKey | None = None,
               check: bool = True) -> dict[str, str]:
        """The envelope of the document: Ed25519 over the UTF-8 bytes of ``signed`` (``check=False``: a body
        the table refuses, to see the node refuse it too)."""
        if check:
            self.protocol.check(table, body)
        text = json.dumps(body)
        key = key or self._key
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        envelope = {"signed": text, "key_id": raw.hex()[:16], "sig": base64.b64encode(key.sign(text.encode())).decode()}
        self.protocol.check("SignedEnvelope", envelope)
        return envelope

    def manifest(self, job_id: str, data: bytes, name: str = "outside part", **extra: Any) -> dict[str, Any]:
        self.seq += 1
        now = time.time()
        body = {"node_id": self.node_id, "seq": self.seq, "issued_s": now, "expires_s": now + 3600,
                "hub_time_s": now, "job_id": job_id, "name": name, "file_sha256": hashlib.sha256(data).hexdigest(),
                "file_bytes": len(data), **extra}
        self.files[job_id] = data
        return body

    def submit(self, job_id: str, data: bytes, key: Ed25519PrivateKey | None = None, check: bool = True,
               **extra: Any) -> None:
        envelope = self.signed(self.manifest(job_id, data, **extra), "JobManifest", key, check)
        self.send("job", envelope, "SignedEnvelope")

    def serve_chunk(self, request: dict[str, Any]) -> None:
        data = self.files.get(request["job_id"])
        header: dict[str, Any] = {"job_id": request["job_id"], "offset": request["offset"], "length": 0,
                                  "total_bytes": 0, "req_id": request["req_id"], "error": None}
        chunk = b""
        if data is None:
            header["error"] = "no such job"
        else:
            chunk = data[request["offset"]:request["offset"] + request["length"]]
            header.update(length=len(chunk), total_bytes=len(data))
        self.protocol.check("ChunkReply", header)
        head = json.dumps(header).encode()
        self.client.publish(f"{ROOT}/{self.node_id}/down/chunk", struct.pack(">I", len(head)) + head + chunk, qos=0)

    # --- telemetry ---
    def decode_telemetry(self, payload: bytes) -> dict[str, Any]:
        inflater = zlib.decompressobj(zdict=self.protocol.zdict)
        raw = inflater.decompress(payload, 16 * 1024 * 1024)
        batch = json.loads(raw)
        self.protocol.check("TelemetryBatch", batch)
        return batch


def telemetry_samples(batch: dict[str, Any]) -> list[dict[str, float | None]]:
    """The batch's samples, decoded as docs/protocol.md's *Compression* says."""
    samples, tick = [], 0
    for offset in batch["t_offsets"]:
        tick += offset
        samples.append({"t_s": batch["t0_s"] + tick * batch["step_s"]})
    for name, deltas in batch["fields"].items():
        total = 0
        for sample, delta in zip(samples, deltas, strict=True):
            if delta is None:
                sample[name] = None
                continue
            total += delta
            sample[name] = round(total * batch["scale"][name], 6)
    return samples
