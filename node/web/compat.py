"""The OctoPrint API level the node's compatible routes follow: the answer to ``GET /api/version``
and the TXT records of the zeroconf announcement say the same thing.

No aiohttp here: the CLI writes the announcement without the web stack."""
from __future__ import annotations

API_VERSION = "0.1"
SERVER_VERSION = "1.10.0"  # the OctoPrint API level these routes follow
