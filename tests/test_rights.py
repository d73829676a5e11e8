"""Rights per output (issue 8, deliverable 3; finding 2): one list of user roles, a class on
every io_map output, one rights table (role x output class x command kind) checked for every
command whatever its transport, narrowed by a node's [rights] section. Sans-IO and simulated
time; the MQTT path is in test_command_authority_mqtt.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_runtime import cli
from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.config.iomap import default_io_maps_dir, load_io_map
from edge_runtime.config.reader import ConfigError, ErrorLog, Section
from edge_runtime.config.schema import OUTPUT_CLASSES
from edge_runtime.core import authority
from edge_runtime.core.authority import DEFAULT_RIGHTS, USER_ROLES, Refused, read_rights
from edge_runtime.core.clock import VirtualClock
from edge_runtime.core.commands import (
    AnnounceWorkload,
    ForceOutput,
    ReleaseForce,
    ResetTrip,
    SetControlMode,
    SetOutput,
)
from edge_runtime.federation.inbound import Invalid, parse_command
from edge_runtime.node import Node
from edge_runtime.safety import config as safety_config
from edge_runtime.security import signing
from tests.fakes import FakeDevice

pytestmark = pytest.mark.timeout(20)

# A CDU pump and a rack battery inverter on the shipped io_maps: outputs of classes pump,
# battery and heartbeat side by side, so a right on one class is seen not to leak to another.
NODE = """
[node]
name = "cdu-01"
role = "cdu"
site = "s1"
scan_period_ms = 100

[devices.pump1]
io_map = "cdu_pump_vfd"
endpoint = "127.0.0.1:15020"
unit_id = 1

[devices.battery]
io_map = "battery_inverter"
endpoint = "127.0.0.1:15020"
unit_id = 2
"""
STAMP = "2026-01-01T00:00:00Z"


def node(tmp_path: Path, extra: str = "") -> Node:
    path = tmp_path / "node.toml"
    path.write_text(NODE + extra)
    return assemble(load_node_config(path), clock=VirtualClock(start=1000.0),
                    watchdog_thread=False, blocks=[],
                    driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                         for d in c.devices})


def scan(n: Node) -> None:
    n.clock.advance(0.1)  # type: ignore[attr-defined]
    n.engine.scan_once(n.clock.monotonic())


def last_audit(n: Node) -> tuple[bool, str]:
    rec = n.commands.audit[-1]
    return rec.accepted, rec.reason


# --- one list of roles, one spelling ------------------------------------------------------------

def test_one_list_of_user_roles_is_used_everywhere() -> None:
    assert USER_ROLES == ("workload_operator", "infrastructure_manager", "grid_operator",
                          "municipal_partner")
    # the safety config's reset_role, the signed envelope and the key tool use that very list
    assert safety_config.USER_ROLES is USER_ROLES
    assert signing.ROLES is USER_ROLES
    # ... and every role of the table is one of them, the municipal one included
    assert set(DEFAULT_RIGHTS.grants) == set(USER_ROLES)
    assert DEFAULT_RIGHTS.allows("municipal_partner", "set_output", "heat_recovery")


def test_keygen_makes_the_municipal_partners_key(tmp_path: Path) -> None:
    assert cli.main(["keygen", "--role", "municipal_partner", str(tmp_path)]) == 0
    assert set(signing.load_keys(tmp_path)) == {"municipal_partner"}
    # the old spelling is gone: a usage error
    assert cli.main(["keygen", "--role", "municipal_utility", str(tmp_path)]) == 2


# --- a class on every output --------------------------------------------------------------------

def test_every_shipped_output_declares_a_known_class() -> None:
    seen = set()
    for path in sorted(default_io_maps_dir().glob("*.toml")):
        errors = ErrorLog()
        io_map = load_io_map(path, errors)
        assert io_map is not None and not errors.lines, errors.lines
        for p in io_map.outputs:
            assert p.output_class in OUTPUT_CLASSES, (path.name, p.name)
            seen.add((io_map.model, p.name, p.output_class))
        assert all(p.output_class == "" for p in io_map.inputs if not p.access.writable)
    assert {("cdu_pump_vfd", "control_word", "pump"), ("control_valve", "position_cmd", "valve"),
            ("battery_inverter", "w_set_kw", "battery"),
            ("battery_inverter", "ctrl_hb", "heartbeat")} <= seen


OUTPUT = """[device]
model = "m"
[points.run]
address = 0
type = "uint16"
access = "w"
failsafe = 1
max_hold_s = 2.0
"""


@pytest.mark.parametrize(("line", "reason"), [
    ('class = "pumpp"\n', "class: must be one of pump, valve"),
    ("", "class: required for an output"),
    ('class = 3\n', "class: must be a string"),
])
def test_a_bad_or_missing_class_names_file_and_key(tmp_path: Path, line: str,
                                                   reason: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(OUTPUT + line)
    errors = ErrorLog()
    load_io_map(path, errors)
    assert any(e.startswith(f"{path}: [points.run] {reason}") for e in errors.lines), errors.lines


def test_an_input_has_no_class(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[device]\nmodel = "m"\n[points.t]\naddress = 0\ntype = "int16"\n'
                    'class = "pump"\n')
    errors = ErrorLog()
    load_io_map(path, errors)
    assert errors.lines == [f"{path}: [points.t] class: only outputs (access w or rw) have a "
                            f"class"]


# --- the table ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("role", "kind", "cls", "allowed"), [
    ("grid_operator", "set_output", "pump", False),  # finding 2
    ("grid_operator", "grid_signal", "pump", False),
    ("grid_operator", "grid_signal", "battery", True),
    ("grid_operator", "set_output", "battery", True),
    ("grid_operator", "force", "battery", False),
    ("infrastructure_manager", "set_output", "pump", True),
    ("infrastructure_manager", "thermal_control", "battery", False),  # wrong channel
    ("infrastructure_manager", "set_output", "heartbeat", False),  # only forced
    ("infrastructure_manager", "force", "heartbeat", True),
    ("workload_operator", "set_output", "valve", False),
    ("workload_operator", "announce", None, True),
    ("municipal_partner", "set_output", "pump", False),
    ("municipal_partner", "set_mode", None, False),
])
def test_default_table(role: str, kind: str, cls: str | None, allowed: bool) -> None:
    assert DEFAULT_RIGHTS.allows(role, kind, cls) is allowed


def test_a_refusal_names_the_rule() -> None:
    with pytest.raises(Refused) as err:
        DEFAULT_RIGHTS.check("grid_operator", "set_output", "pump", "pump1.control_word")
    assert str(err.value) == ("rights: grid_operator may not set_output on class pump "
                              "(pump1.control_word)")
    with pytest.raises(Refused, match="rights: unknown role 'root'"):
        DEFAULT_RIGHTS.check("root", "announce")
    with pytest.raises(Refused, match=r"rights: workload_operator may not do this: set_mode "
                                      r"\(allowed: infrastructure_manager\)"):
        DEFAULT_RIGHTS.check("workload_operator", "set_mode")


def rights_section(body: dict[str, object]) -> tuple[authority.Rights, list[str]]:
    errors = ErrorLog()
    rights = read_rights(Section("node.toml", "rights", body, errors))
    return rights, errors.lines


def test_a_node_may_narrow_the_table() -> None:
    rights, errors = rights_section({"grid_operator": {"grid_signal": [], "set_output":
                                                       ["battery"]},
                                     "workload_operator": {"announce": False}})
    assert errors == []
    assert not rights.allows("grid_operator", "grid_signal", "battery")
    assert rights.allows("grid_operator", "set_output", "battery")
    assert not rights.allows("workload_operator", "announce")
    assert rights.allows("workload_operator", "workload")  # untouched kinds keep the default
    assert "grid_operator" not in rights.roles_for("grid_signal")


@pytest.mark.parametrize(("body", "line"), [
    ({"municipal_utility": {"set_output": []}},
     "node.toml: [rights] municipal_utility: unknown role; one of workload_operator"),
    ({"grid_operator": {"set_outputs": []}},
     "node.toml: [rights.grid_operator] set_outputs: unknown command kind"),
    ({"grid_operator": {"set_output": ["batery"]}},
     "node.toml: [rights.grid_operator] set_output: unknown output class 'batery'"),
    ({"grid_operator": {"set_output": ["pump"]}},
     "node.toml: [rights.grid_operator] set_output: may only narrow the default table: "
     "grid_operator has no set_output right on pump"),
    ({"grid_operator": {"set_mode": True}},
     "node.toml: [rights.grid_operator] set_mode: may only narrow"),
    ({"grid_operator": {"announce": "no"}},
     "node.toml: [rights.grid_operator] announce: must be true or false"),
    ({"grid_operator": {"set_output": "battery"}},
     "node.toml: [rights.grid_operator] set_output: must be a list of output classes"),
    ({"grid_operator": 3}, "node.toml: [rights] grid_operator: must be a table"),
])
def test_a_bad_rights_section_names_the_key(body: dict[str, object], line: str) -> None:
    _, errors = rights_section(body)
    assert any(e.startswith(line) for e in errors), errors


def test_the_node_loader_reads_rights(tmp_path: Path) -> None:
    n = node(tmp_path, '[rights.grid_operator]\nbattery_control = []\n')
    n.commands.submit(SetOutput("battery.w_set_kw", 10.0, source="mqtt.battery_control",
                                role="grid_operator"))
    scan(n)
    assert last_audit(n) == (False, "rights: grid_operator may not battery_control on class "
                                    "battery (battery.w_set_kw)")
    path = tmp_path / "bad.toml"
    path.write_text(NODE + '[rights.grid_operator]\nset_output = ["pump"]\n')
    with pytest.raises(ConfigError) as err:
        load_node_config(path)
    assert any("[rights.grid_operator] set_output: may only narrow" in e
               for e in err.value.lines)


# --- every command is checked, whatever it moves ------------------------------------------------

def test_a_grid_signal_cannot_stop_a_pump(tmp_path: Path) -> None:
    """Finding 2: a grid_signal signed by grid_operator setting pump1.control_word = 0 was
    applied as a SetOutput (the cmd kind alone decided). Now the class decides."""
    n = node(tmp_path)
    scan(n)
    assert n.image.output("pump1.control_word") == 1.0  # failsafe: running
    n.commands.submit(SetOutput("pump1.control_word", 0.0, source="mqtt.grid_signal",
                                role="grid_operator"))
    scan(n)
    assert last_audit(n) == (False, "rights: grid_operator may not set_output on class pump "
                                    "(pump1.control_word)")
    assert n.image.output("pump1.control_word") == 1.0
    assert n.manual.holds() == {}
    refused = [e for e in n.events.recent(10) if e.code == "command_refused"]
    assert refused and "rights: grid_operator" in refused[-1].message
    # the same role on its own class, on its own channel: applied
    n.commands.submit(SetOutput("battery.w_set_kw", -50.0, source="mqtt.grid_signal",
                                role="grid_operator"))
    scan(n)
    assert last_audit(n) == (True, "")
    assert n.image.output("battery.w_set_kw") == -50.0


def test_the_infrastructure_manager_on_the_wrong_channel_is_refused(tmp_path: Path) -> None:
    n = node(tmp_path)
    n.commands.submit(SetOutput("battery.w_set_kw", 50.0, source="mqtt.thermal_control",
                                role="infrastructure_manager"))
    scan(n)
    assert last_audit(n) == (False, "rights: infrastructure_manager may not thermal_control on "
                                    "class battery (battery.w_set_kw)")


def test_a_remote_command_must_name_its_role(tmp_path: Path) -> None:
    n = node(tmp_path)
    n.commands.submit(SetOutput("pump1.speed_ref", 50.0, source="opcua.session-7"))
    scan(n)
    assert last_audit(n) == (False, "rights: a remote command (opcua.session-7) must carry "
                                    "its role")


def test_forces_modes_announcements_and_resets_use_the_table(tmp_path: Path) -> None:
    n = node(tmp_path, '[rights.infrastructure_manager]\nreset_trip = false\n')
    cmds = [ForceOutput("battery.w_set_kw", 10.0, role="grid_operator"),
            ForceOutput("battery.ctrl_hb", 7.0, role="infrastructure_manager"),
            ReleaseForce("battery.ctrl_hb", role="municipal_partner"),
            SetControlMode("pumps", "Manual", 10.0, role="municipal_partner"),
            AnnounceWorkload(None, role="grid_operator"),
            ResetTrip("infrastructure_manager")]
    for cmd in cmds:
        n.commands.submit(cmd)
    scan(n)
    audit = [(a.accepted, a.reason) for a in list(n.commands.audit)[-len(cmds):]]
    assert audit == [
        (False, "rights: grid_operator may not force on class battery (battery.w_set_kw)"),
        (True, ""),
        (False, "rights: municipal_partner may not release_force on class heartbeat "
                "(battery.ctrl_hb)"),
        (False, "rights: municipal_partner may not do this: set_mode (allowed: "
                "infrastructure_manager)"),
        (False, "rights: grid_operator may not do this: announce (allowed: "
                "infrastructure_manager, workload_operator)"),
        (False, "rights: infrastructure_manager may not do this: reset_trip (allowed: "
                "grid_operator, municipal_partner, workload_operator)")]


def test_parse_command_carries_the_signers_role(tmp_path: Path) -> None:
    """The MQTT parser passes the role on: the signer's with a verifier, else the channel's."""
    n = node(tmp_path)
    body = {"PSWD_version": "1.0", "timestamp": STAMP, "action": "set_output",
            "point": "pump1.control_word", "value": 0, "role": "grid_operator"}
    unsigned = parse_command("grid_signal", json.dumps(body).encode(), retain=False,
                             max_bytes=4096, image=n.image, role="infrastructure_manager")
    assert unsigned == SetOutput("pump1.control_word", 0.0, "mqtt.grid_signal",
                                 role="infrastructure_manager")  # an unsigned claim is ignored
    signed = parse_command("grid_signal", json.dumps(body).encode(), retain=False,
                           max_bytes=4096, image=n.image, verify=lambda kind, doc: None)
    assert isinstance(signed, SetOutput) and signed.role == "grid_operator"
    with pytest.raises(Refused, match="rights: grid_operator may not set_output on class pump"):
        n.manual.check(signed, n.image)  # what the link answers on the error topic
    with pytest.raises(Invalid) as err:
        parse_command("grid_signal", json.dumps({**body, "value": 2.5}).encode(), retain=False,
                      max_bytes=4096, image=n.image, verify=lambda kind, doc: None)
    assert err.value.field == "value" and "not a whole number" in err.value.reason
