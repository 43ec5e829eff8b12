"""Which ledger backend a location names: a path is SQLite (one hub process), a ``postgresql://`` URL is
PostgreSQL (several ``hub serve`` workers, on one machine or several)."""
from __future__ import annotations

from pathlib import Path

from node.hub.ledger import Ledger


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def open_ledger(location: str | Path) -> Ledger:
    """A ``postgresql://`` URL opens the PostgreSQL backend (psycopg 3); anything else is a SQLite file path."""
    if is_postgres_url(location):
        from node.hub.ledger_postgres import PostgresLedger

        return PostgresLedger(str(location))
    from node.hub.ledger_sqlite import SqliteLedger

    return SqliteLedger(Path(location))
