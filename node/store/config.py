"""``[store]``: how the SQLite store batches high-rate writes (node/store/db.py)."""
from __future__ import annotations

from pydantic import Field

from node.section import Section


class StoreSection(Section):
    """``[store]``: write batching of the SQLite store."""

    batch_commit_s: float = Field(5.0, gt=0, description="real seconds high-rate rows wait before one commit")
