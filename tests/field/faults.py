"""Helpers of the fault suite: G-code, store reads from outside the daemon, process trees."""
from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path
from typing import Any


def moves_gcode(path: Path, moves: int, mm: float = 10.0, feed_mm_min: float = 600.0) -> Path:
    """A job without heating: ``moves`` moves of ``mm`` (1 s of sim time each at the default feed)."""
    lines = ["G28", "G90", f"G1 X0 Y0 F{feed_mm_min:g}"]
    lines += [f"G1 X{mm * ((i + 1) % 2):g} Y{i * 0.01:.2f}" for i in range(moves)]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_store(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """Read the daemon's store from outside it, as a second reader (WAL allows it)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc), e.g. the virtual printer the daemon started."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(x) for x in handle.read().split()]
    except OSError:
        pass
    return found


def sigkill_tree(pid: int) -> None:
    """SIGKILL a daemon like a power cut would stop it, then its orphaned children (systemd's
    KillMode=control-group does the latter on a Pi)."""
    kids = children(pid)
    os.kill(pid, signal.SIGKILL)
    for kid in kids:
        try:
            os.kill(kid, signal.SIGKILL)
        except ProcessLookupError:
            pass
