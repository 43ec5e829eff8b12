"""The first N commands of a real G-code file, for benches that stream a part of one (stream.py, marlin.py)."""
from __future__ import annotations

from pathlib import Path

from node.native import streamcore


def prefix_file(path: Path, commands: int, out_dir: Path) -> tuple[Path, int]:
    """Write the file's first ``commands`` command lines (comments and blank lines between them kept)
    to ``out_dir``; return the new file and how many commands it holds (fewer if the file is shorter)."""
    out = out_dir / f"{path.stem}.first{commands}.gcode"
    count = 0
    with path.open("rb") as src, out.open("wb") as dst:
        for raw in src:
            dst.write(raw)
            if streamcore.clean(raw):
                count += 1
                if count >= commands:
                    break
    return out, count
