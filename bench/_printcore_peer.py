"""Run Printrun's printcore on one file against a port; print a JSON summary (runs in the peer venv).

CPU is user+sys of this process from startprint() to the end of the print, the same window
`printnode print --json` measures (start-up, G-code parsing and connecting excluded).
"""
import json
import resource
import sys
import time

from printrun import gcoder
from printrun.printcore import printcore


def main() -> int:
    port, path, baud = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(path) as handle:
        gcode = gcoder.LightGCode([line.rstrip("\n") for line in handle])
    core = printcore(port, baud)
    deadline = time.monotonic() + 30
    while not core.online and time.monotonic() < deadline:
        time.sleep(0.05)
    if not core.online:
        print(json.dumps({"error": "printcore did not come online"}))
        return 1
    time.sleep(0.5)  # let the connect chatter settle
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    core.startprint(gcode)
    while core.printing:
        time.sleep(0.002)
    seconds = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    lines = sum(1 for line in gcode.lines if line.raw.split(";", 1)[0].strip())
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    try:
        core.disconnect()
    except RuntimeError:  # printcore joins a thread it may not have started; the print is over anyway
        pass
    print(json.dumps({"lines": lines, "seconds": seconds, "lines_per_s": lines / seconds, "cpu_s": cpu_s,
                      "cpu_us_per_line": 1e6 * cpu_s / lines, "max_rss_mb": after.ru_maxrss / 1024}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
