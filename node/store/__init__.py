"""SQLite persistence: one database file in the state directory, one thread that touches it."""
from node.store.db import Store, StoreFull, StoreUnusable, transaction

__all__ = ["Store", "StoreFull", "StoreUnusable", "transaction"]
