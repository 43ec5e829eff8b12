"""The forecast worker: one call in a fresh interpreter, ``python -P -m node.plan.worker``.

Why a plain child process and not multiprocessing: the daemon spawns it rarely (a new forecast every few
simulated hours), and ``multiprocessing`` with ``concurrent.futures.process`` cost the resident daemon
1.8 MB for that (issue #19); ``subprocess`` is loaded anyway.  The call goes in on stdin and the result
(or the exception it raised) comes back on stdout, both pickled: parent and child are the same program.
Only module-level functions of ``node`` are called.  The worker runs at a lower priority (nice 10) than the
daemon, whose printer thread streams meanwhile within the same CPU quota.
"""
from __future__ import annotations

import importlib
import os
import pickle
import sys


def main() -> int:
    # below the daemon: its printer thread streams while a forecast is computed, in the same CPU quota on a Pi
    os.nice(10)
    module, name, args = pickle.loads(sys.stdin.buffer.read())
    if not module.startswith("node."):
        raise SystemExit(f"node.plan.worker: refusing to call {module}.{name}")
    try:
        reply = (True, getattr(importlib.import_module(module), name)(*args))
    except Exception as exc:  # handed back to the caller, which raises it there
        try:
            pickle.dumps(exc)
            reply = (False, exc)
        except Exception:
            reply = (False, RuntimeError(f"{type(exc).__name__}: {exc}"))
    sys.stdout.buffer.write(pickle.dumps(reply))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
