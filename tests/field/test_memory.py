"""The daemon's lean web stack (issue #19): with the page on, `printnode run` asks aiohttp and its helpers for
their pure-Python implementations and keeps Python's built-in MIME table; PRINTNODE_WEB_SPEEDUPS=1 keeps the C
extensions.  Checked in a child process (the switches are read when aiohttp is first imported); no memory
figure is asserted here (bench/footprint.py and docs/benchmarks.md have them)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = """
import json, mimetypes
from node.field.memory import lean_web_stack
leaned = lean_web_stack()
import sys
from aiohttp import http_parser, web  # noqa: F401
import multidict, yarl
client_side = sorted(m for m in sys.modules if m in ("aiohttp.client", "aiohttp.connector", "aiohttp.cookiejar"))
import aiohttp
session = aiohttp.ClientSession   # a name only the package's __init__ defines
from aiohttp import FormData   # noqa: F401
print(json.dumps({"leaned": leaned, "client_side": client_side, "session": session.__module__,
                  "version": aiohttp.__version__, "http_version": str(aiohttp.http.SERVER_SOFTWARE),
                  "pure_parser": http_parser.HttpRequestParser is http_parser.HttpRequestParserPy,
                  "pure_multidict": multidict.CIMultiDict.__module__ == "multidict._multidict_py",
                  "pure_yarl": yarl._quoting._Quoter.__module__ == "yarl._quoting_py",
                  "mime_types": len(mimetypes.types_map), "js": mimetypes.guess_type("app.js")[0]}))
"""


def run_child(**env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.endswith("_NO_EXTENSIONS")} | env
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60,
                            env=environment)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_the_daemon_web_stack_is_pure_python_with_the_builtin_mime_table() -> None:
    lean = run_child()
    assert lean["leaned"] and lean["pure_parser"] and lean["pure_multidict"] and lean["pure_yarl"]
    assert lean["js"] and lean["mime_types"] < 400   # the built-in table, not /etc/mime.types' ~1500 entries
    assert lean["client_side"] == []   # aiohttp.web without the package's __init__ and its client side


def test_aiohttp_without_its_init_becomes_whole_at_the_first_name_only_the_init_defines() -> None:
    lean = run_child()
    assert lean["session"] == "aiohttp.client"
    assert lean["version"] and lean["version"] in lean["http_version"]


def test_web_speedups_keep_the_c_extensions() -> None:
    fast = run_child(PRINTNODE_WEB_SPEEDUPS="1")
    assert not fast["leaned"] and not fast["pure_parser"] and not fast["pure_multidict"] and not fast["pure_yarl"]
    assert fast["client_side"] == ["aiohttp.client", "aiohttp.connector", "aiohttp.cookiejar"]
