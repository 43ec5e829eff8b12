"""paho-mqtt 2.x set-up shared by the node client and the reference hub.

One place for the details measured on this stack: a stable client id with ``clean_start=False``
*and* a session expiry (MQTT v5 keeps a session only with both; 3.1.1 uses ``clean_session=False``),
TCP_NODELAY on the socket (~88 ms → < 1 ms request/response on loopback), capped reconnect backoff,
TLS with a CA and an optional client certificate, or username/password.
"""
from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass
class BrokerSettings:
    host: str
    port: int = 1883
    protocol: str = "5"  # "5" or "3.1.1"
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls: bool = False
    keepalive_s: int = 60
    session_expiry_s: int = 7 * 86400
    persistent: bool = True
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0


def _nodelay(client: mqtt.Client, userdata: object, sock: object) -> None:
    """Disable Nagle: a request and its answer are tiny, and delayed ACK would hold them ~40-200 ms."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        pass


def make_client(settings: BrokerSettings) -> mqtt.Client:
    """A configured, not yet connected client (call :func:`connect_async` then ``loop_start``)."""
    v5 = settings.protocol == "5"
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else not settings.persistent,
    )
    client.reconnect_delay_set(min_delay=max(1, int(settings.reconnect_min_s)),
                               max_delay=max(1, int(settings.reconnect_max_s)))
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls or settings.ca_file is not None:
        client.tls_set(ca_certs=str(settings.ca_file) if settings.ca_file else None,
                       certfile=str(settings.cert_file) if settings.cert_file else None,
                       keyfile=str(settings.key_file) if settings.key_file else None,
                       cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.on_socket_open = _nodelay
    return client


def connect_async(client: mqtt.Client, settings: BrokerSettings) -> None:
    if settings.protocol == "5":
        props = Properties(PacketTypes.CONNECT)
        if settings.persistent:
            props.SessionExpiryInterval = settings.session_expiry_s
        client.connect_async(settings.host, settings.port, settings.keepalive_s,
                             clean_start=not settings.persistent, properties=props)
    else:
        client.connect_async(settings.host, settings.port, settings.keepalive_s)


def publish_props(settings: BrokerSettings, expiry_s: int | None) -> Properties | None:
    """v5 message expiry (None under 3.1.1, which has none)."""
    if settings.protocol != "5" or expiry_s is None:
        return None
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = expiry_s
    return props
