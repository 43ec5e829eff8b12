"""Checkpoints at layer changes: the marker offsets found chunk by chunk, and the streamer checkpointing
as each layer starts (with the interval checkpoint switched off) over a real pty."""
from __future__ import annotations

import dataclasses
import random
import threading
from pathlib import Path

from node.printer.layers import LayerMarks
from node.printer.worker import PrinterWorker, PrintOutcome, PrintRequest
from tests.printer.helpers import FAST, RecordingSink, virtual_printer, write_job


def test_markers_found_whatever_the_chunking() -> None:
    rng = random.Random(3)
    lines = [rng.choice([b";LAYER_CHANGE", b";LAYER:%d" % i, b"G1 X1", b"; not a ;LAYER:", b"M105"])
             for i in range(400)]
    data = b"\n".join(lines) + b"\n"
    expected, offset = [], 0
    for line in lines:
        if line.startswith((b";LAYER_CHANGE", b";LAYER:")):
            expected.append(offset)
        offset += len(line) + 1
    for _ in range(20):
        marks, at = LayerMarks(0), 0
        while at < len(data):
            size = rng.randint(1, 40)
            marks.feed(data[at:at + size])
            at += size
        assert list(marks._marks) == expected
        assert marks.passed(expected[9]) == 10 and marks.passed(expected[9]) == 0


def test_the_streamer_checkpoints_as_each_layer_starts(tmp_path: Path) -> None:
    path = tmp_path / "job.gcode"
    write_job(path, 330)  # a ;LAYER_CHANGE every 97 moves
    data = path.read_bytes()
    layer_starts = [i + 1 for i in range(len(data)) if data.startswith(b"\n;LAYER_CHANGE", i)]
    # ~3 real seconds a layer: more than LAYER_CHECKPOINT_MIN_S apart
    with virtual_printer(tmp_path, time_scale=10.0, planner_depth=16) as rig:
        sink = RecordingSink()
        # no interval checkpoints: whatever is stored comes from a layer change
        worker = PrinterWorker(rig.path, 115200, sink, settings=dataclasses.replace(FAST, checkpoint_interval_s=3600))
        worker._open()
        worker._connect()
        outcome: list[PrintOutcome] = []
        thread = threading.Thread(target=lambda: outcome.append(worker._stream(PrintRequest("l", path))))
        thread.start()
        thread.join(120)
        worker.link.close()
    assert outcome and outcome[0].status == "completed"
    assert len(sink.checkpoints) >= 2, sink.checkpoints
    for checkpoint in sink.checkpoints:
        # taken within a progress tick of a layer's start: just past one of the markers
        after = [start for start in layer_starts if start <= checkpoint.byte_offset]
        assert after and checkpoint.byte_offset - after[-1] < 2000, (checkpoint.byte_offset, layer_starts)
