"""The generated sample jobs are real prints that grow with their index."""
from pathlib import Path

from node.gcode.analysis import analyze_file
from node.gcode.sample import SAMPLE_NAME, sample_job
from node.printer.profile import load_profile


def test_sample_parts_grow_and_fit_the_bed(tmp_path: Path) -> None:
    profile = load_profile("ender3")
    results = []
    for index in range(4):
        name, gcode = sample_job(profile, index)
        path = tmp_path / name
        path.write_text(gcode)
        results.append((name, analyze_file(path, profile)))
    assert results[0][0] == SAMPLE_NAME
    minutes = [a.estimated_seconds / 60 for _, a in results]
    energy = [a.energy_wh for _, a in results]
    assert minutes == sorted(minutes) and energy == sorted(energy) and minutes[-1] > 5 * minutes[0]
    for _, analysis in results:
        assert analysis.max_bed_c == 60 and analysis.max_hotend_c == 205 and analysis.layers >= 40
