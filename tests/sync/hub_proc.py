"""The reference hub in its own process, until it is killed: ``python hub_proc.py HUB_DIR PORT``."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

from node.hub.server import Hub
from node.sync.mqtt import BrokerSettings

if __name__ == "__main__":
    hub = Hub(Path(sys.argv[1]), BrokerSettings(host="127.0.0.1", port=int(sys.argv[2]), client_id="hub"))
    hub.start()
    hub.connected.wait(10)
    print("started", flush=True)
    threading.Event().wait()
