"""io_maps and devices for field protocols other than Modbus: `[device] protocol`, point `ref`,
and the endpoint form each protocol takes. The assembler picks drivers by protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.assembly import load_node_config
from edge_runtime.assembly.build import PROTOCOL_BUILDERS, build_drivers
from edge_runtime.config.iomap import load_io_map
from edge_runtime.config.reader import ErrorLog
from edge_runtime.core.clock import VirtualClock

OPCUA_MAP = """
[device]
model = "{model}"
description = "battery system controller over OPC UA"
protocol = "opcua"

[points.soc_pct]
ref = "ns=2;s=Bess.SoC"
type = "float32"
unit = "%"
min = 0
max = 100

[points.w_set_kw]
ref = "ns=2;s=Bess.WSet"
type = "float32"
access = "w"
min = -500
max = 500
failsafe = 0
max_hold_s = 5
class = "battery"
"""


def write_map(tmp: Path, model: str, text: str) -> Path:
    path = tmp / f"{model}.toml"
    path.write_text(text.format(model=model))
    return path


def test_an_opcua_map_loads_with_refs_and_no_registers(tmp_path: Path) -> None:
    errors = ErrorLog()
    io_map = load_io_map(write_map(tmp_path, "bess_ua", OPCUA_MAP), errors)
    assert errors.lines == [] and io_map is not None
    assert io_map.protocol == "opcua"
    assert {p.name: p.ref for p in io_map.points} == {"soc_pct": "ns=2;s=Bess.SoC",
                                                      "w_set_kw": "ns=2;s=Bess.WSet"}
    assert io_map.point("w_set_kw").output_class == "battery"


@pytest.mark.parametrize(("change", "key", "says"), [
    (("ref = \"ns=2;s=Bess.WSet\"", "ref = \"ns=2;s=Bess.SoC\""), "ref", "already point"),
    (("ref = \"ns=2;s=Bess.SoC\"\n", ""), "ref", "required"),
    (("protocol = \"opcua\"", "protocol = \"profinet\""), "protocol", "modbus"),
    (("class = \"battery\"\n", ""), "class", "required for an output"),
])
def test_bad_maps_name_the_key(tmp_path: Path, change: tuple[str, str], key: str,
                               says: str) -> None:
    errors = ErrorLog()
    load_io_map(write_map(tmp_path, "bess_ua", OPCUA_MAP.replace(*change)), errors)
    assert any(f"{key}:" in line and says in line for line in errors.lines), errors.lines


def node_config(tmp: Path, endpoint: str) -> tuple[Path, ErrorLog]:
    write_map(tmp, "bess_ua", OPCUA_MAP)
    cfg = tmp / "node.toml"
    cfg.write_text(f"""
[node]
name = "rack1"
role = "rack"
io_maps_dir = "{tmp}"

[devices.bess]
io_map = "bess_ua"
endpoint = "{endpoint}"

[devices.bess2]
io_map = "bess_ua"
endpoint = "{endpoint}"
""")
    return cfg, ErrorLog()


def test_opcua_endpoints_are_urls_and_unit_ids_do_not_collide(tmp_path: Path) -> None:
    cfg, _ = node_config(tmp_path, "opc.tcp://127.0.0.1:4841/bess")
    config = load_node_config(cfg)
    dev = {d.name: d for d in config.devices}["bess"]
    assert (dev.protocol, dev.endpoint, dev.host, dev.port) == (
        "opcua", "opc.tcp://127.0.0.1:4841/bess", "127.0.0.1", 4841)


@pytest.mark.parametrize("endpoint", ["127.0.0.1:4841", "opc.tcp://127.0.0.1:99999",
                                      "mqtt:rack1-sn1"])
def test_a_wrong_endpoint_form_names_the_form(tmp_path: Path, endpoint: str) -> None:
    cfg, _ = node_config(tmp_path, endpoint)
    with pytest.raises(Exception, match=r"endpoint: must be opc\.tcp://host:port"):
        load_node_config(cfg)


def test_the_assembler_refuses_a_protocol_without_a_driver(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    cfg, _ = node_config(tmp_path, "opc.tcp://127.0.0.1:4841")
    config = load_node_config(cfg)
    monkeypatch.delitem(PROTOCOL_BUILDERS, "opcua", raising=False)
    with pytest.raises(ValueError, match=r"no driver for protocol\(s\) \['opcua'\]"):
        build_drivers(config, {}, VirtualClock())
