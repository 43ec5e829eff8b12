"""The daemon's memory: fewer malloc arenas (issue #19, docs/benchmarks.md "Footprint").

glibc gives each thread that allocates its own malloc arena (up to 8 per core), and each keeps
pages of its own; the daemon has a handful of threads (store, telemetry source, printer worker,
asyncio's executor) that allocate little and rarely.  One arena for the whole process saved
~2.7 MB of the ~65 MB steady RSS under `make run`; the threads rarely allocate at the same moment,
so the shared arena's lock costs nothing measurable.  Called before the first thread starts.
"""
from __future__ import annotations

import ctypes
import logging

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
