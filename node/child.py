"""How the daemon starts its child processes (the virtual printer, the simulated charge controller)."""
from __future__ import annotations

import sys


def python_module_command(module: str) -> list[str]:
    """``python -P -m module``: a child started this way cannot import a ``node/`` folder that
    happens to sit in the working directory instead of the package (``-P``: no cwd on sys.path)."""
    return [sys.executable, "-P", "-m", module]
