"""The zeroconf (mDNS/DNS-SD) announcement of the page and the OctoPrint-compatible API, as an
avahi service file: ``printnode web announce`` writes it, ``scripts/install-pi.sh`` puts it in
``/etc/avahi/services/``.

Why a file and not a library in the daemon: Raspberry Pi OS runs avahi-daemon already, and it
announces whatever service files it finds (and re-reads the directory when one changes), so the
node costs nothing resident for it.  Two services, as OctoPrint's discovery plugin publishes them:

- ``_octoprint._tcp`` with ``path``, ``api``, ``version`` (and ``model``, ``vendor``): what
  slicers browse for (PrusaSlicer's and Cura's OctoPrint "Browse" list; the TXT ``version`` is what
  they show, ``path`` is appended to the address);
- ``_http._tcp`` (``_https._tcp`` with TLS) with ``path``: the page, for any browser's list.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from node.web.compat import API_VERSION, SERVER_VERSION
from node.web.config import WebSection

AVAHI_SERVICE_PATH = "/etc/avahi/services/printnode.service"
MODEL = "Solar Print Node"
VENDOR = "printnode"


class NothingToAnnounce(ValueError):
    """The page is off or only on this machine: announcing it on the LAN would mislead."""


def txt_records(config: WebSection) -> dict[str, dict[str, str]]:
    """Service type -> its TXT records (the test reads them back from the XML)."""
    web_type = "_https._tcp" if config.scheme == "https" else "_http._tcp"
    return {
        "_octoprint._tcp": {"path": "/", "api": API_VERSION, "version": SERVER_VERSION, "model": MODEL,
                            "vendor": VENDOR},
        web_type: {"path": "/"},
    }


def avahi_service_xml(config: WebSection, node_id: str) -> str:
    """The service file for ``[web]``; NothingToAnnounce (a sentence) when there is nothing to reach."""
    if not config.enabled:
        raise NothingToAnnounce("the web page is off ([web] enabled = false): nothing to announce")
    if config.bind.startswith("127.") or config.bind == "::1" or config.bind == "localhost":
        raise NothingToAnnounce(f"[web] bind is {config.bind}: the page is reachable from this machine only, "
                                "so announcing it on the LAN would mislead")
    if config.port == 0:
        raise NothingToAnnounce("[web] port is 0 (any free port): set a fixed port to announce it")
    group = ET.Element("service-group")
    name = ET.SubElement(group, "name", {"replace-wildcards": "yes"})
    name.text = f"{MODEL} {node_id} on %h"  # %h: avahi puts the host name in
    for service_type, records in txt_records(config).items():
        service = ET.SubElement(group, "service")
        ET.SubElement(service, "type").text = service_type
        ET.SubElement(service, "port").text = str(config.port)
        for key, value in records.items():
            ET.SubElement(service, "txt-record").text = f"{key}={value}"
    ET.indent(group)
    return ('<?xml version="1.0" standalone="no"?>\n<!DOCTYPE service-group SYSTEM "avahi-service.dtd">\n'
            f"<!-- written by `printnode web announce`; avahi-daemon announces it -->\n"
            f"{ET.tostring(group, encoding='unicode')}\n")
