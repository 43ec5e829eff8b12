"""Room on the disk: uploads and hub downloads leave a reserve, so the store can always record
how a print ended, and a full disk is said in plain words instead of an errno."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path


def no_room_reason(directory: Path, size_bytes: int, reserve_bytes: int) -> str | None:
    """Why a file of ``size_bytes`` may not be stored in ``directory``, or None if it fits
    and leaves ``reserve_bytes`` free."""
    existing = directory
    while not existing.exists() and existing != existing.parent:  # not made yet: the disk it will be on
        existing = existing.parent
    free_bytes = shutil.disk_usage(existing).free
    if free_bytes - size_bytes >= reserve_bytes:
        return None
    return (f"store full: {_mb(size_bytes)} would leave {_mb(max(0, free_bytes - size_bytes))} free in {directory}, "
            f"below the {_mb(reserve_bytes)} kept for the node's records (jobs.reserve_mb); "
            "delete old files or use a larger card")


def disk_error(exc: OSError) -> str:
    """A plain sentence for an OSError met while writing the node's files."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "store full: the disk has no space left (nothing was saved; free space on the card)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {exc.filename or 'the state directory'}: {exc.strerror} (is the card read-only?)"
    return f"storage error: {exc.strerror or exc} ({exc.filename or 'state directory'})"


def _mb(size_bytes: int) -> str:
    return f"{size_bytes / 1048576:.1f} MB"
