"""Which node gets a fleet job: one that can print it, with the earliest energy window.

Pure.  "Route production where the sun is": among nodes whose printer meets the job's
requirements, the one whose plan summary promises energy soonest wins (a window already open
counts as *now*); ties go to a node online now, then the shorter queue, then the node id (stable).
A node that never reported a plan ranks after every node that did.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from node.sync.protocol import PrinterCapabilities, PrinterRequirements


@dataclass(frozen=True)
class Candidate:
    node_id: str
    capabilities: PrinterCapabilities | None
    next_window_start_s: float | None = None
    online: bool = False
    queue_length: int = 0


def choose_node(requirements: PrinterRequirements, candidates: list[Candidate],
                now_s: float) -> tuple[str | None, dict[str, list[str]]]:
    """The chosen node id (None if nobody can print it) and, per refused node, why."""
    refused: dict[str, list[str]] = {}
    eligible: list[Candidate] = []
    for cand in candidates:
        if cand.capabilities is None:
            refused[cand.node_id] = ["capabilities unknown (node never said hello)"]
            continue
        why = requirements.unmet_by(cand.capabilities)
        if why:
            refused[cand.node_id] = why
        else:
            eligible.append(cand)
    if not eligible:
        return None, refused

    def rank(cand: Candidate) -> tuple[float, int, int, str]:
        start = math.inf if cand.next_window_start_s is None else max(cand.next_window_start_s, now_s)
        return (start, 0 if cand.online else 1, cand.queue_length, cand.node_id)

    return min(eligible, key=rank).node_id, refused
