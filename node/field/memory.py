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

aiohttp's package ``__init__`` imports its client side (client, connector, cookie jar, resolver, tracing,
digest auth) for the names it re-exports; the page serves and never fetches.  :func:`lean_web_stack` puts
the package in ``sys.modules`` without running that ``__init__`` (:func:`package_without_init`), so
``import aiohttp.web`` loads the server's modules only: ~3 MB less resident.  Nothing can break for it:
the first use of any name the ``__init__`` defines (``aiohttp.ClientSession``, ``from aiohttp import
FormData``) runs the real ``__init__`` into the same module, and then everything is as usual.
"""
from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
import os
import sys
from types import ModuleType

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
    if os.environ.get("PRINTNODE_WEB_SPEEDUPS") == "1" or "aiohttp" in sys.modules:
        return False
    for name in PURE_PYTHON_SWITCHES:
        os.environ.setdefault(name, "1")
    import mimetypes

    if not mimetypes.inited:
        mimetypes.knownfiles = []   # Python's built-in table only (.html, .js, .css, .svg, .png, ...)
        mimetypes.init()
    package_without_init("aiohttp")
    return True


#: what the import system and introspection ask a module for that a package's ``__init__`` does not define:
#: answered "no" without running it
PROBED_DUNDERS = frozenset({"__wrapped__", "__getstate__", "__reduce__", "__reduce_ex__", "__origin__",
                            "__class_getitem__", "__set_name__", "__signature__", "__text_signature__"})


def package_without_init(name: str) -> ModuleType | None:
    """Put package ``name`` in ``sys.modules`` without running its ``__init__`` (see the module docstring).

    Its submodules import as usual (``import name.sub``, ``from . import sub`` inside it).  Any other
    attribute, the first time one is asked for, runs the real ``__init__`` into this module object and is
    then looked up there: the package behaves as if imported whole, having cost memory only from then on.
    ``__version__`` is taken from the installed distribution (aiohttp's ``http`` module reads it: it then
    needs no ``__init__``).  None
    (nothing done) if the package is already imported or not installed."""
    if name in sys.modules:
        return sys.modules[name]  # type: ignore[no-any-return]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return None
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    whole = False

    def __getattr__(attribute: str) -> object:
        nonlocal whole
        if importlib.util.find_spec(f"{name}.{attribute}") is not None:
            return importlib.import_module(f"{name}.{attribute}")
        if whole or attribute in PROBED_DUNDERS:
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}")
        whole = True
        log.debug("%s: running the package's __init__ for %r", name, attribute)
        loader.exec_module(module)
        return getattr(module, attribute)

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    try:
        from importlib.metadata import version

        module.__version__ = version(name)  # type: ignore[attr-defined]
    except Exception:  # no distribution metadata: the first read of it runs the __init__
        pass
    sys.modules[name] = module
    return module
