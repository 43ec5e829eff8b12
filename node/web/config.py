"""``[web]``: the node's web page and HTTP API (node/web/server.py reads it).

Kept free of aiohttp so ``node.config`` (and every CLI command) loads without the web stack.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from node.section import Section


class WebSection(Section):
    """``[web]``: where the page and the API listen, and how they are reached."""

    enabled: bool = Field(True, description="serve the web page and the HTTP API")
    bind: str = Field("0.0.0.0", min_length=1, description="address to listen on: 0.0.0.0 = every interface "
                                                            "(the LAN); 127.0.0.1 = this machine only")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0: any free port, named in status)")
    tls_cert: Path | None = Field(None, description="PEM certificate chain: serve HTTPS (with tls_key)")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    credentials: str = Field("web-credentials.json", description="API key and page password hash; relative to "
                                                                 "state_dir unless absolute (mode 0600)")
    session_hours: float = Field(12.0, gt=0, le=24 * 30, description="a page login lasts this long")
    max_upload_mb: float | None = Field(None, gt=0, description="largest upload; default: jobs.max_file_mb")

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSection:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both for HTTPS, or neither")
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"
