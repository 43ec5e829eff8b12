"""The CLI's start-up (issue #19): a command imports only its own module, ``--help`` lists every
command without importing any, and ``printnode status`` stays out of the heavy libraries.

What a command imports is read from ``sys.modules`` in a child process after the command ran:
no timing is asserted here (bench/footprint.py measures the seconds and megabytes).
"""
from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli import build_parser, command_of
from node.commands import COMMANDS
from node.controlclient import DEFAULT_SOCKET, DEFAULT_STATE_DIR, control_socket_path

#: what `printnode status` must never load: each costs megabytes and tenths of a second on a Pi Zero
#: (pydantic: ~17 MB and most of the old start-up; the daemon validates, the client only reads JSON)
HEAVY = ("numpy", "pvlib", "pandas", "scipy", "aiohttp", "cryptography", "paho", "pydantic", "matplotlib")
#: the child: run the CLI on argv, then write the names of the modules it loaded into a file
CHILD = """
import json, sys
from node.cli import main
try:
    main(json.loads(sys.argv[1]))
except SystemExit:
    pass
open(sys.argv[2], "w").write(json.dumps(sorted(sys.modules)))
"""


def modules_loaded_by(argv: list[str], tmp_path: Path) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    out = tmp_path / "modules.json"
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argv), str(out)], capture_output=True,
                            text=True, timeout=60)
    return set(json.loads(out.read_text())), result


def heavy_among(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_status_without_a_daemon_loads_no_heavy_library(tmp_path: Path) -> None:
    modules, result = modules_loaded_by(["status", "--state-dir", str(tmp_path)], tmp_path)
    assert "no printnode daemon is listening" in result.stderr
    assert not heavy_among(modules), heavy_among(modules)
    assert "node.config" not in modules and "node.commands.hub" not in modules


def test_help_lists_every_command_and_imports_none(tmp_path: Path) -> None:
    modules, result = modules_loaded_by(["--help"], tmp_path)
    for name, (_, help_line) in COMMANDS.items():
        assert name in result.stdout and help_line.split()[0] in result.stdout, name
    assert not [m for m in modules if m.startswith("node.commands.")], "--help imported a command module"
    assert not heavy_among(modules)


def test_the_command_table_matches_what_each_module_registers() -> None:
    """COMMANDS (read for --help without importing anything) names exactly the commands each module
    registers, with the same help lines and in the same module."""
    registered: dict[str, tuple[str, str]] = {}
    for module_name in dict.fromkeys(module for module, _ in COMMANDS.values()):
        subparsers = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"node.commands.{module_name}").register(subparsers)
        for action in subparsers._choices_actions:
            registered[action.dest] = (module_name, action.help or "")
    assert registered == COMMANDS


def test_a_command_parses_with_only_its_module_loaded() -> None:
    assert command_of(["--version"]) is None and command_of(["status", "--json"]) == "status"
    args = build_parser("queue").parse_args(["queue", "list", "--all"])
    assert args.func.__module__ == "node.commands.control" and args.all
    with pytest.raises(SystemExit):
        build_parser("nonsense").parse_args(["nonsense"])


@pytest.mark.parametrize("file_text, sets", [
    ("", []),
    ("[node]\nstate_dir = '/srv/node'\n", []),
    ("[node]\nstate_dir = '/srv/node'\n[control]\nsocket = '/run/printnode.sock'\n", []),
    ("[control]\nsocket = 'sub/c.sock'\n", ['node.state_dir="/tmp/x"']),
    ("[node]\nstate_dir = 'a'\n", ["node.state_dir=b", "control.socket = 'd.sock'"]),
])
def test_the_light_socket_lookup_agrees_with_the_full_config(tmp_path: Path, file_text: str,
                                                             sets: list[str]) -> None:
    from node.config import load_config
    from node.control import ControlSection
    from node.node import NodeSection

    assert (str(NodeSection().state_dir), ControlSection().socket) == (DEFAULT_STATE_DIR, DEFAULT_SOCKET)
    config_path = tmp_path / "node.toml"
    config_path.write_text(file_text)
    assert control_socket_path(config_path, sets) == load_config(config_path, sets, use_overrides=False).control_socket


def test_the_light_socket_lookup_leaves_a_doubtful_config_to_the_full_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    assert control_socket_path(bad, []) is None
    assert control_socket_path(tmp_path / "missing.toml", []) is None
    assert control_socket_path(None, ["node.state_dir=5"]) is None
    assert control_socket_path(None, ["node.state_dir"]) is None
    result = subprocess.run([sys.executable, "-m", "node", "status", "--set", "node.state_dir=5"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "node.state_dir" in result.stderr and "Traceback" not in result.stderr
