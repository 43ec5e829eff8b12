"""The ``[sync]`` section of node.toml: the broker, credentials, hub keys, budgets.

No ``broker_host`` (the embedded default) means offline: the Sync component then only keeps the
outbox, so a node provisioned later sends everything it recorded meanwhile.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from node.section import Section


class SyncSection(Section):
    broker_host: str | None = Field(None, description="MQTT broker host; none = offline (outbox only)")
    broker_port: int = Field(1883, ge=1, le=65535, description="8883 for TLS by convention")
    protocol: Literal["auto", "5", "3.1.1"] = Field("auto", description="auto: MQTT v5, falling back to 3.1.1")
    tls: bool = Field(False, description="TLS to the broker (on when tls_ca_file is set)")
    tls_ca_file: Path | None = Field(None, description="CA certificate that signed the broker's certificate")
    tls_cert_file: Path | None = Field(None, description="client certificate (CN = node id)")
    tls_key_file: Path | None = Field(None, description="client certificate's private key")
    username: str | None = Field(None, description="default: the node id when a password is set")
    password: str | None = None
    hub_public_keys: list[str] = Field(default_factory=list,
                                       description="Ed25519 public keys (64 hex) whose signatures the node trusts")
    keepalive_s: int = Field(60, ge=5, le=65535)
    session_expiry_s: int = Field(7 * 86400, ge=0, description="how long the broker keeps our session offline")
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(60.0, gt=0, description="backoff cap; reconnects go on forever")
    ack_timeout_s: float = Field(30.0, gt=0, description="real seconds before an unacked outbox message is resent")
    telemetry_resolution_s: float = Field(60.0, gt=0, description="samples are averaged into buckets this long")
    telemetry_batch_s: float = Field(600.0, gt=0, description="sim seconds of telemetry per outbox message")
    telemetry_budget_mb: float = Field(16.0, gt=0, description="payload bytes the telemetry backlog may use")
    state_interval_s: float = Field(600.0, ge=0, description="sim seconds between retained power/printer state updates"
                                    " (state changes go at once); 600 s = 144 small messages a day")
    chunk_bytes: int = Field(128 * 1024, ge=1024, le=4 * 1024 * 1024)
    chunk_window: int = Field(4, ge=1, le=64, description="chunk requests in flight")
    chunk_timeout_s: float = Field(10.0, gt=0, description="real seconds before a chunk is requested again")
    materials: list[str] = Field(default_factory=lambda: ["PLA"], description="filament(s) the node can print")
    ha_discovery: bool = Field(False, description="publish Home Assistant discovery config topics")

    @field_validator("hub_public_keys")
    @classmethod
    def _hex_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
                raise ValueError(f"{key[:16]}...: an Ed25519 public key is 64 lowercase hex digits")
        return keys

    @model_validator(mode="after")
    def _tls_pairs(self) -> SyncSection:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self

    @property
    def online(self) -> bool:
        return self.broker_host is not None

    @property
    def use_tls(self) -> bool:
        return self.tls or self.tls_ca_file is not None
