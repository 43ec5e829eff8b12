"""The daemon's memory: fewer malloc arenas, a lean web stack (issue #19, docs/benchmarks.md "Footprint").

glibc gives each thread that allocates its own malloc arena (up to 8 per core), and each keeps
pages of its own; the daemon has a handful of threads (store, telemetry source, printer worker,
asyncio's executor) that allocate little and rarely.  One arena for the whole process saved
~2.7 MB of the ~65 MB steady RSS under `make run`; the threads rarely allocate at the same moment,
so the shared arena's lock costs nothing measurable.  Called before the first thread starts.

The web page (aiohttp) is the largest part of the daemon that is not the node: 11.5 MB with its
C extensions.  :func:`lean_web_stack` asks aiohttp and its helpers (yarl, multidict, propcache,
frozenlist) for their pure-Python implementations, through the switches each reads when imported:
1.5 MB less resident (their extension modules' code and tables), at a few hundred microseconds more
per request, which a page for one or two people and a slicer's uploads do not feel.  It also fills
the MIME table from Python's built-in list instead of reading /etc/mime.types (aiohttp adds a type
at import, which loads the whole system table: ~0.4 MB of strings).  ``PRINTNODE_WEB_SPEEDUPS=1``
keeps the C extensions.
"""
from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Ask glibc for at most ``arenas`` malloc arenas; False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked with
    except (OSError, AttributeError):  # musl, macOS: nothing to tune
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = bool(mallopt(M_ARENA_MAX, arenas))
    if not ok:
        log.debug("mallopt(M_ARENA_MAX) refused")
    return ok


#: the switches aiohttp, yarl, multidict, propcache and frozenlist read at import (any non-empty value)
PURE_PYTHON_SWITCHES = ("AIOHTTP_NO_EXTENSIONS", "YARL_NO_EXTENSIONS", "MULTIDICT_NO_EXTENSIONS",
                        "PROPCACHE_NO_EXTENSIONS", "FROZENLIST_NO_EXTENSIONS")


def lean_web_stack() -> bool:
    """Before aiohttp is imported: its pure-Python implementations and the built-in MIME table (see the
    module docstring).  False (nothing changed) with ``PRINTNODE_WEB_SPEEDUPS=1`` or once aiohttp is loaded."""
    import sys

    if os.environ.get("PRINTNODE_WEB_SPEEDUPS") == "1" or "aiohttp" in sys.modules:
        return False
    for name in PURE_PYTHON_SWITCHES:
        os.environ.setdefault(name, "1")
    import mimetypes

    if not mimetypes.inited:
        mimetypes.knownfiles = []   # Python's built-in table only (.html, .js, .css, .svg, .png, ...)
        mimetypes.init()
    return True
