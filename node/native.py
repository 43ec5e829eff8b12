"""The compiled Cython cores, loaded with a clear error instead of a slow fallback.

The streaming and analysis hot paths exist only as Cython extensions built
from ``ext/`` by ``pip install .`` (or ``make build``).  If they are missing the
node refuses to start rather than silently print slower.
"""
from __future__ import annotations

import importlib
from types import ModuleType


class NativeCoreMissing(ImportError):
    pass


def load_core(name: str) -> ModuleType:
    """Import ``node._<name>`` built from ``ext/<name>.pyx``."""
    try:
        return importlib.import_module(f"node._{name}")
    except ImportError as exc:
        raise NativeCoreMissing(
            f"the compiled core node._{name} (from ext/{name}.pyx) is missing or broken: {exc}. "
            "Build it with `make build` or `pip install .`; the node has no pure-Python fallback."
        ) from exc


streamcore = load_core("streamcore")
