"""Checkpoints in the store never move backwards within a print, and a fresh start clears them."""
from pathlib import Path

from node.printer.printer import clear_checkpoint, load_checkpoint, save_checkpoint
from node.printer.worker import Checkpoint
from node.store import Store


def point(offset: int) -> Checkpoint:
    return Checkpoint(byte_offset=offset, resume_offset=max(0, offset - 100), line_number=offset // 10,
                      lines_acked=offset // 10, hotend_target_c=205.0, bed_target_c=60.0, t_real_s=0.0)


def test_checkpoint_is_monotonic_and_cleared_on_a_fresh_start(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3").open()
    try:
        store.run_sync(lambda c: c.execute(
            "INSERT INTO jobs(id, name, state, version, queue_seq, source, created_s, updated_s)"
            " VALUES('j', 'j', 'printing', 1, 1, 'cli', 0, 0)"))
        for offset in (500, 900, 640, 880):  # a resume re-sends the rewound lines behind 900 first
            store.run_sync(lambda c, o=offset: save_checkpoint(c, "j", 1.0, point(o)))
        kept = store.run_sync(lambda c: load_checkpoint(c, "j"))
        assert kept is not None and kept.byte_offset == 900 and kept.resume_offset == 800
        store.run_sync(lambda c: save_checkpoint(c, "j", 2.0, point(1200)))
        assert store.run_sync(lambda c: load_checkpoint(c, "j")).byte_offset == 1200
        store.run_sync(lambda c: clear_checkpoint(c, "j"))
        assert store.run_sync(lambda c: load_checkpoint(c, "j")) is None
        store.run_sync(lambda c: save_checkpoint(c, "j", 3.0, point(50)))  # the retry's first checkpoint counts
        assert store.run_sync(lambda c: load_checkpoint(c, "j")).byte_offset == 50
    finally:
        store.close()
