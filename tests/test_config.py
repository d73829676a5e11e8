"""Node config loading: valid files become frozen objects; every bad key is named."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.assembly import load_node_config
from edge_runtime.cli import main
from edge_runtime.config.reader import ConfigError
from tests.fakes import write_io_map

GOOD = """
[node]
name = "cdu-01"
role = "cdu"
scan_period_ms = 50
io_maps_dir = "maps"

[devices.pump1]
io_map = "test_pump"
endpoint = "127.0.0.1:15020"
unit_id = 1
poll_ms = 100

[devices.pump1.limits.speed_actual]
low_low = 5.0
low = 10.0
high = 95.0
high_high = 99.0

[devices.pump2]
io_map = "test_pump"
endpoint = "127.0.0.1:15020"
unit_id = 2
"""


def write_config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "maps").mkdir(exist_ok=True)
    write_io_map(tmp_path / "maps")
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def errors_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_node_config(write_config(tmp_path, text))
    return info.value.lines


def test_good_config_loads_frozen(tmp_path: Path) -> None:
    cfg = load_node_config(write_config(tmp_path, GOOD))
    assert cfg.name == "cdu-01" and cfg.role == "cdu"
    assert cfg.scan_period_s == pytest.approx(0.05)
    assert cfg.watchdog_s == pytest.approx(0.5)  # default: max(5 periods, 500 ms)
    pump1 = cfg.device("pump1")
    assert (pump1.host, pump1.port, pump1.unit_id) == ("127.0.0.1", 15020, 1)
    assert pump1.limits["speed_actual"].high_high == 99.0
    assert pump1.io_map is cfg.device("pump2").io_map  # one io_map loaded once
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        pump1.limits["x"] = pump1.limits["speed_actual"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('scan_period_ms = 50', 'scan_period_ms = 50\nscan_perod_ms = 5',
         "[node] scan_perod_ms: unknown key"),
        ('scan_period_ms = 50', 'scan_period_ms = "50"', "[node] scan_period_ms: must be a number"),
        ('scan_period_ms = 50', 'scan_period_ms = 5', "[node] scan_period_ms: must be >= 10"),
        ('role = "cdu"', 'role = "pump"', "[node] role: must be one of cdu, rack, site"),
        ('name = "cdu-01"\n', '', "[node] name: required"),
        ('unit_id = 1', 'unit_id = 300', "[devices.pump1] unit_id: must be <= 247"),
        ('unit_id = 1', 'unit_id = 1.5', "[devices.pump1] unit_id: must be an integer"),
        ('unit_id = 2', 'unit_id = 1',
         "[devices.pump2] unit_id: unit 1 at 127.0.0.1:15020 is already used by device 'pump1'"),
        ('endpoint = "127.0.0.1:15020"\nunit_id = 1', 'endpoint = "localhost"\nunit_id = 1',
         "[devices.pump1] endpoint: must be host:port"),
        ('io_map = "test_pump"\nendpoint = "127.0.0.1:15020"\nunit_id = 1',
         'io_map = "nope"\nendpoint = "127.0.0.1:15020"\nunit_id = 1',
         "[devices.pump1] io_map: no io_map 'nope'"),
        ('poll_ms = 100', 'poll_ms = 100\nrefresh_ms = 1500',
         "[devices.pump1] refresh_ms: 1500 ms is more than half the max_hold_s"),
        ('low = 10.0', 'low = 3.0',
         "[devices.pump1.limits.speed_actual] low: thresholds must rise"),
        ('high = 95.0', 'high = 99.5',
         "[devices.pump1.limits.speed_actual] high_high: thresholds must rise"),
        ('[devices.pump1.limits.speed_actual]', '[devices.pump1.limits.speed_ref]',
         "[devices.pump1.limits.speed_ref] (point): 'speed_ref' is write-only"),
        ('[devices.pump1.limits.speed_actual]', '[devices.pump1.limits.sped]',
         "[devices.pump1.limits.sped] (point): io_map 'test_pump' has no point 'sped'"),
        ('high_high = 99.0', 'high_high = 99.0\nhi = 3',
         "[devices.pump1.limits.speed_actual] hi: unknown key"),
        ('scan_period_ms = 50', 'scan_period_ms = 50\nwatchdog_ms = 60',
         "[node] watchdog_ms: must be at least two scan periods"),
        ('scan_period_ms = 50', 'scan_period_ms = 50\nrealtime_priority = 100',
         "[node] realtime_priority: must be <= 99, got 100"),
    ],
)
def test_each_bad_key_is_named(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    lines = errors_of(tmp_path, GOOD.replace(old, new, 1))
    assert any(expected in line for line in lines), lines
    assert all(line.startswith(str(tmp_path / "node.toml")) for line in lines), lines


def test_all_errors_reported_together(tmp_path: Path) -> None:
    text = GOOD.replace("scan_period_ms = 50", "scan_period_ms = 1").replace(
        "unit_id = 2", "unit_id = -1")
    lines = errors_of(tmp_path, text)
    assert len(lines) == 2, lines


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, GOOD + "\n[node\n")
    assert "syntax" in lines[0] and "line" in lines[0]


def test_io_map_errors_name_the_map_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD)
    bad_map = (tmp_path / "maps" / "test_pump.toml")
    bad_map.write_text(bad_map.read_text().replace("failsafe = 100.0\n", ""))
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert f"{bad_map}: [points.speed_ref] failsafe: required for an output" in str(info.value)


def test_cli_run_exits_2_on_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, GOOD.replace("poll_ms = 100", "poll_ms = 1"))
    assert main(["run", "--config", str(path)]) == 2
    assert "[devices.pump1] poll_ms: must be >= 10" in capsys.readouterr().err


def test_console_script_exits_2_on_bad_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD.replace('role = "cdu"', 'role = 7'))
    exe = Path(sys.executable).parent / "pswd-edge"
    proc = subprocess.run([str(exe), "run", "--config", str(path)], capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert "[node] role: must be a string" in proc.stderr


def test_shipped_examples_load() -> None:
    root = Path(__file__).resolve().parents[1] / "examples"
    for name in ("cdu.toml", "rack.toml"):
        cfg = load_node_config(root / name)
        assert cfg.devices
