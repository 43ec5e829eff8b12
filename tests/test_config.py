import subprocess
import sys
from pathlib import Path

import pytest

from node.config import OVERRIDES_FILE, ConfigError, NodeConfig, load_config, parse_set, write_override


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_embedded_defaults_are_a_simulated_offline_node() -> None:
    config = NodeConfig()
    assert config.printer.port == "virtual"
    assert config.simulated and config.auto_plate_clear
    assert config.state_dir == Path("var")


@pytest.mark.parametrize("text, key, why", [
    ("[printer]\nbaud = 'fast'\n", "printer.baud", "valid integer"),
    ("[printer]\nbuad = 115200\n", "printer.buad", "unknown key"),
    ("[clock]\ntime_scale = -1\n", "clock.time_scale", "greater than or equal to 0"),
    ("[clock]\nstart = 'yesterday'\n", "clock.start", "ISO 8601"),
    ("[node]\nid = 'Bad Id!'\n", "node.id", "pattern"),
    ("[control]\nmode = 4096\n", "control.mode", "less than or equal"),
    ("[jobz]\nx = 1\n", "jobz", "unknown key"),
])
def test_errors_name_the_key_and_why(tmp_path: Path, text: str, key: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert any(p.startswith(key + ":") and why in p for p in info.value.problems), info.value.problems


def test_toml_syntax_error_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[printer\nport = 1"))


def test_check_config_cli_names_bad_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[printer]\nbaud = 'fast'\nprofile = 'ender3'\n")
    result = subprocess.run([sys.executable, "-m", "node", "check-config", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "printer.baud" in result.stderr and "fast" in result.stderr


def test_check_config_cli_unknown_profile(tmp_path: Path) -> None:
    path = write(tmp_path, "[printer]\nprofile = 'nope'\n")
    result = subprocess.run([sys.executable, "-m", "node", "check-config", str(path)], capture_output=True, text=True)
    assert result.returncode == 2 and "printer.profile" in result.stderr and "ender3" in result.stderr


def test_example_config_is_valid_and_documents_every_key() -> None:
    example = Path(__file__).parent.parent / "config" / "node.example.toml"
    result = subprocess.run([sys.executable, "-m", "node", "check-config", str(example)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = example.read_text()

    def keys(model: type, prefix: str = "") -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                out += keys(annotation, prefix + name + ".")
            else:
                out.append(prefix + name)
        return out

    for dotted in keys(NodeConfig):
        section, _, key = dotted.rpartition(".")
        assert f"[{section}]" in text, f"section [{section}] missing from the example"
        assert f"\n{key} =" in text or f"\n# {key} =" in text, f"{dotted} is not documented in the example"


def test_set_and_overrides_layer_in_order(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    path = write(tmp_path, f"[node]\nstate_dir = '{state}'\n[printer]\nbaud = 250000\n")
    assert load_config(path).printer.baud == 250000
    write_override(load_config(path), "printer.baud=57600")
    assert (state / OVERRIDES_FILE).exists()
    assert load_config(path).printer.baud == 57600
    assert load_config(path, sets=["printer.baud=9600"]).printer.baud == 9600
    assert parse_set("printer.port=/dev/ttyACM0") == {"printer": {"port": "/dev/ttyACM0"}}


def test_override_refuses_invalid_value_and_keeps_file(tmp_path: Path) -> None:
    config = load_config(sets=[f"node.state_dir='{tmp_path}'"])
    write_override(config, "printer.baud=57600")
    before = (tmp_path / OVERRIDES_FILE).read_text()
    with pytest.raises(ConfigError, match="printer.baud"):
        write_override(config, "printer.baud='x'")
    assert (tmp_path / OVERRIDES_FILE).read_text() == before


def test_override_cannot_move_the_state_dir(tmp_path: Path) -> None:
    (tmp_path / OVERRIDES_FILE).write_text("[node]\nstate_dir = '/tmp/elsewhere'\n")
    with pytest.raises(ConfigError, match="node.state_dir"):
        load_config(sets=[f"node.state_dir='{tmp_path}'"])


def test_config_set_without_daemon_writes_the_override_and_show_reflects_it(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "node", "config", *args, "--state-dir", str(tmp_path)],
                              capture_output=True, text=True)

    assert cli("set", "printer.baud=250000").returncode == 0
    bad = cli("set", "printer.baud=fast")
    assert bad.returncode == 2 and "printer.baud" in bad.stderr
    import json
    shown = json.loads(cli("show", "--json").stdout)
    assert shown["printer"]["baud"] == 250000


def test_hub_config_changes_go_to_the_override_file_and_bad_ones_are_refused(tmp_path: Path) -> None:
    import asyncio

    from node.clock import ManualClock
    from node.control import ControlServer
    from node.events import ConfigChangeRequested
    from node.jobs import Jobs
    from node.node import Node
    from node.store import Store

    async def scenario() -> None:
        config = load_config(sets=[f"node.state_dir='{tmp_path}'"], use_overrides=False)
        node = Node(config.node, ManualClock())
        store = Store(tmp_path / "s.sqlite3").open()
        jobs = Jobs(node, store)
        server = ControlServer(node, config.control, jobs=jobs, runner=None,  # type: ignore[arg-type]
                               socket_path=config.control_socket, files_dir=tmp_path / "files",
                               max_file_bytes=1024, reserve_bytes=0,
                               save_setting=lambda a, source: write_override(config, a, source))
        await server.start()
        try:
            await node.send_event("config_change_requested", ConfigChangeRequested(
                assignments=["printer.baud=250000", "printer.bogus=1"], source="hub"))
        finally:
            await server.stop()
            store.close()

    asyncio.run(scenario())
    text = (tmp_path / OVERRIDES_FILE).read_text()
    assert "baud = 250000" in text and "bogus" not in text


# --- issue #14, finding 4 and 10: settings that cannot brick a node ---------------------------
def test_a_setting_is_checked_against_this_nodes_config_not_the_defaults(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = write(tmp_path, f"[node]\nstate_dir = '{state}'\n[battery]\ncells = 8\n")
    config = load_config(path)
    with pytest.raises(ConfigError, match="absorption_v|float_v"):
        write_override(config, "battery.absorption_v=15")
    assert not (state / OVERRIDES_FILE).exists()
    load_config(path)  # the next start still works


@pytest.mark.parametrize("assignment", ["node.state_dir='/'", "node.id='other'", "control.socket='/tmp/x.sock'",
                                        "store.batch_commit_s=1"])
def test_identity_and_place_are_never_set_at_run_time(tmp_path: Path, assignment: str) -> None:
    config = load_config(sets=[f"node.state_dir='{tmp_path}'"])
    with pytest.raises(ConfigError, match="cannot be set at run time"):
        write_override(config, assignment)


@pytest.mark.parametrize("assignment", ["safety.allowed_commands=['M997']", "sync.hub_public_keys=['00']",
                                        "printer.port='/dev/ttyS0'", "safety.max_hotend_c=400"])
def test_trust_safety_and_devices_are_never_set_from_the_hub(tmp_path: Path, assignment: str) -> None:
    config = load_config(sets=[f"node.state_dir='{tmp_path}'"])
    with pytest.raises(ConfigError, match="from the hub"):
        write_override(config, assignment, "hub")


def test_a_bad_override_file_is_set_aside_and_the_node_starts(tmp_path: Path) -> None:
    (tmp_path / OVERRIDES_FILE).write_text("[battery]\nabsorption_v = 3\n")
    with pytest.raises(ConfigError):  # a tool reading the config hears about it
        load_config(sets=[f"node.state_dir='{tmp_path}'"])
    config = load_config(sets=[f"node.state_dir='{tmp_path}'"], set_aside_bad_overrides=True)
    assert config.overrides_problem is not None and "set aside" in config.overrides_problem
    assert not (tmp_path / OVERRIDES_FILE).exists()
    assert [p.name for p in tmp_path.glob(f"{OVERRIDES_FILE}.bad-*")]


def test_a_binary_config_file_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.source == str(path) and "not a text file" in caught.value.problems[0]


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_no_number_in_the_config_is_infinite(value: str) -> None:
    with pytest.raises(ConfigError, match="battery.capacity_ah"):
        load_config(sets=[f"battery.capacity_ah={value}"])


def test_a_binary_profile_is_named_as_the_file_it_is(tmp_path: Path) -> None:
    profile = tmp_path / "mine.toml"
    profile.write_bytes(bytes(range(256)))
    path = write(tmp_path, f"[printer]\nprofile = '{profile}'\n")
    result = subprocess.run([sys.executable, "-m", "node", "check-config", str(path)], capture_output=True, text=True)
    assert result.returncode == 2 and f"{profile} is not a text file" in result.stderr + result.stdout
