"""``protocol = "auto"``: a broker that only speaks MQTT 3.1.1 refuses the v5 CONNECT; the node falls back.

The "3.1.1-only broker" is a small TCP front of the real Mosquitto: it reads the first packet,
answers a v5 CONNECT (protocol level 5) the way a 3.1.1 broker does — CONNACK return code 1,
unacceptable protocol version (MQTT 3.1.1 §3.2.2.3) — and splices anything else through.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from sync_harness import make_hub, node_config, running_node, wait_for


class V311OnlyFront:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.refused_v5 = 0
        self.spliced = 0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(2)
        length, shift, extra = head[1] & 0x7F, 7, b""
        last = head[1]
        while last & 0x80:
            b = await reader.readexactly(1)
            extra += b
            last = b[0]
            length += (last & 0x7F) << shift
            shift += 7
        body = await reader.readexactly(length)
        level = body[2 + int.from_bytes(body[:2], "big")]  # after the protocol name
        if level == 5:
            self.refused_v5 += 1
            writer.write(bytes([0x20, 0x02, 0x00, 0x01]))
            await writer.drain()
            writer.close()
            return
        self.spliced += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        up_writer.write(head + extra + body)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def test_auto_protocol_falls_back_to_311_and_still_syncs(mosquitto, tmp_path: Path):
    async def main() -> None:
        hub = make_hub(tmp_path / "hub", mosquitto)
        front = V311OnlyFront(mosquitto.port)
        await front.start()
        try:
            config = node_config(tmp_path / "n1", None, "n1", [hub.key.public_hex], broker_host="127.0.0.1",
                                 broker_port=front.port, protocol="auto")
            async with running_node(config) as rn:
                await wait_for(lambda: rn.sync.connected.is_set(), what="connected after the fallback")
                assert front.refused_v5 >= 1 and front.spliced >= 1
                assert rn.sync._settings is not None and rn.sync._settings.protocol == "3.1.1"
                await wait_for(lambda: hub.ledger.read(lambda c: c.execute(
                    "SELECT capabilities FROM nodes WHERE node_id = 'n1'").fetchone()), what="hello over 3.1.1")
        finally:
            front.close()
            hub.stop()

    asyncio.run(main())
