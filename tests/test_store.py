import sqlite3
from pathlib import Path

import pytest

from node.store import Store, transaction
from node.store.migrations import MIGRATIONS


def test_migrates_an_empty_store_to_the_newest_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3").open()
    try:
        assert store.schema_version == MIGRATIONS[-1][0]
        tables = store.run_sync(lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")})
        assert {"jobs", "job_transitions", "checkpoints", "meta"} <= tables
        assert store.run_sync(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
        assert store.run_sync(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2  # FULL
    finally:
        store.close()


def test_reopen_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store(path).open()
    store.run_sync(lambda c: store.set_meta(c, "k", "v"))
    store.close()
    again = Store(path).open()
    try:
        assert again.run_sync(lambda c: again.get_meta(c, "k")) == "v"
    finally:
        again.close()


def test_each_migration_applies_from_the_previous_one(tmp_path: Path) -> None:
    """Replaying the list from 0 step by step reaches the same schema as one open."""
    path = tmp_path / "s.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for version, _, sql in MIGRATIONS:
        with transaction(conn):
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    store = Store(path).open()
    try:
        assert store.schema_version == MIGRATIONS[-1][0]
    finally:
        store.close()


def test_refuses_a_store_from_a_newer_printnode(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 9999")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        Store(path).open()


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3").open()
    try:
        def boom(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                store.set_meta(conn, "half", "written")
                raise ValueError("no")

        with pytest.raises(ValueError):
            store.run_sync(boom)
        assert store.run_sync(lambda c: store.get_meta(c, "half")) is None
    finally:
        store.close()


# --- issue #14, finding 9: a damaged or lost store is never silently reset ---------------------
def test_an_empty_or_damaged_database_stops_with_its_path_and_the_fix(tmp_path: Path) -> None:
    import subprocess
    import sys

    from node.store import StoreUnusable

    empty = tmp_path / "empty.sqlite3"
    empty.write_bytes(b"")
    with pytest.raises(StoreUnusable, match=r"empty \(0 bytes\).*mv "):
        Store(empty).open()
    assert empty.stat().st_size == 0  # left as found: the operator decides
    damaged = tmp_path / "state" / "printnode.sqlite3"
    damaged.parent.mkdir()
    damaged.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnusable, match="damaged"):
        Store(damaged).open()
    result = subprocess.run([sys.executable, "-m", "node", "run", "--state-dir", str(damaged.parent)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and str(damaged) in result.stderr and "Traceback" not in result.stderr
    assert damaged.read_bytes().startswith(b"this is not")


def test_a_new_store_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3").open()
    try:
        assert store.schema_version > 0
    finally:
        store.close()
    assert not list(tmp_path.glob("*.new*"))


def test_replay_protection_survives_the_loss_of_the_database(tmp_path: Path) -> None:
    import asyncio

    from node.sync.inbox import Inbox

    async def accept_then_forget() -> list[int]:
        store = Store(tmp_path / "node.sqlite3").open()
        await Inbox(store, "n1", []).record("m1", "job", 41, "accepted", 1.0)
        await Inbox(store, "n1", []).record("m2", "job", 42, "accepted", 2.0)
        store.close()
        for path in tmp_path.glob("node.sqlite3*"):
            path.unlink()  # the card lost the database; the operator started afresh
        fresh = Store(tmp_path / "node.sqlite3").open()
        try:
            _, seqs = await Inbox(fresh, "n1", []).verifier()
            return seqs
        finally:
            fresh.close()

    assert {41, 42} <= set(asyncio.run(accept_then_forget()))


def test_a_jobs_outcome_is_recorded_even_when_the_store_is_full(tmp_path: Path) -> None:
    """Issue #14, finding 7: a finished print showed ``interrupted`` after a restart because its
    completion could not be saved; the oldest telemetry now makes room for it."""
    import asyncio

    from node.clock import ManualClock
    from node.field.config import StorageSection
    from node.field.storage import apply_pragmas
    from node.jobs import Jobs, JobState
    from node.node import Node, NodeSection
    from node.store import StoreFull

    async def scenario() -> None:
        store = Store(tmp_path / "s.sqlite3").open()
        jobs = Jobs(Node(NodeSection(id="t", state_dir=tmp_path), ManualClock()), store)
        job = await jobs.create("part", "cli")
        job = await jobs.transition(job.id, JobState.PRINTING, "starting")
        await store.run(lambda c: apply_pragmas(c, StorageSection(max_db_mb=0.25, journal_size_limit_mb=0.0)))

        def fill(conn: sqlite3.Connection) -> None:
            try:
                for i in range(100_000):
                    conn.execute("INSERT INTO telemetry_raw(t_s, source) VALUES(?, 'sim')", (float(i),))
            except sqlite3.OperationalError as exc:
                assert "full" in str(exc)

        await store.run(fill)
        with pytest.raises(StoreFull):  # the store really is full
            await store.run(lambda c: c.execute("INSERT INTO telemetry_raw(t_s, source) VALUES(1e12, 'x')"))
        done = await jobs.transition(job.id, JobState.COMPLETED, "all lines executed")
        assert done.state == JobState.COMPLETED
        store.close()
        reopened = Store(tmp_path / "s.sqlite3").open()
        try:
            assert reopened.run_sync(lambda c: c.execute("SELECT state FROM jobs").fetchone()[0]) == "completed"
        finally:
            reopened.close()

    asyncio.run(scenario())
