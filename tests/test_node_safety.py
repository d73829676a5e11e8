"""The node's safety wiring: [safety] from the node config, scan order, force / reset commands
with role checks and audit, comms-loss policies, all over FakeDevices in simulated time."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.config.reader import ConfigError
from edge_runtime.core.clock import VirtualClock
from edge_runtime.core.commands import (
    AnnounceWorkload,
    ForceOutput,
    ReleaseForce,
    ResetTrip,
    SetControlMode,
    SetOutput,
)
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality, Sample
from edge_runtime.messages.annex_a import parse_as
from edge_runtime.node import Node
from edge_runtime.safety.interlocks import SafetyLayer
from edge_runtime.safety.redundancy import RedundancyBlock
from tests.fakes import FakeDevice, write_io_map

# test_pump (tests/fakes.py): speed_ref (w, failsafe 100), speed_actual, flow
NODE = """
[node]
name = "cdu-01"
role = "cdu"
scan_period_ms = 100
io_maps_dir = "maps"

[devices.pump1]
io_map = "test_pump"
endpoint = "127.0.0.1:15020"
unit_id = 1

[devices.pump2]
io_map = "test_pump"
endpoint = "127.0.0.1:15020"
unit_id = 2

[devices.pump1.limits.flow]
low_low = 10.0
"""
SAFETY = """
[safety]
startup_s = 0.5

[safety.redundancy.flow]
mode = "1oo2"
sensors = ["pump1.flow", "pump2.flow"]
tolerance = 5.0

[safety.interlocks.no_flow]
when = "pump1.flow <= low_low"
action = "trip"
outputs = { "pump1.speed_ref" = 100.0 }
reset_role = "infrastructure_manager"

[safety.outputs."pump2.speed_ref"]
on_comms_loss = "zero"
"""


class Control:
    """Stands for the role's control blocks; records what it saw of the voted flow."""

    name = "control"

    def __init__(self) -> None:
        self.voted: list[Sample] = []

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        self.voted.append(image.sample("flow.voted"))
        image.write("pump1.speed_ref", 40.0)
        image.write("pump2.speed_ref", 45.0)


class Rig:
    """A node over FakeDevices, stepped scan by scan."""

    def __init__(self, tmp_path: Path, safety: str = SAFETY) -> None:
        (tmp_path / "maps").mkdir(exist_ok=True)
        write_io_map(tmp_path / "maps")
        path = tmp_path / "node.toml"
        path.write_text(NODE + safety)
        self.config = load_node_config(path)
        self.clock = VirtualClock()
        self.control = Control()
        self.node = assemble(self.config, clock=self.clock, watchdog_thread=False,
                         blocks=[self.control],
                         driver_factory=lambda c, live, clk: {
                             d.name: FakeDevice(d, live) for d in c.devices})
        self.fakes = {n: d for n, d in self.node.drivers.items() if isinstance(d, FakeDevice)}
        self.healthy()

    def healthy(self) -> None:
        for dev in ("pump1", "pump2"):
            self.fakes[dev].set_input("flow", 150.0)
            self.fakes[dev].set_input("speed_actual", 40.0)

    def lose(self, dev: str) -> None:
        for point in ("flow", "speed_actual"):
            self.node.live[f"{dev}.{point}"] = Sample.bad("timeout", 0.0)

    def scan(self, n: int = 1) -> None:
        for _ in range(n):
            self.clock.advance(0.1)
            self.node.engine.scan_once(self.clock.monotonic())

    def out(self, point: str) -> float:
        dev, name = point.split(".", 1)
        return self.fakes[dev].staged[-1][1][name]

    def codes(self) -> list[str]:
        return [e.code for e in self.node.events.recent(1000)]


def test_scan_order_estimation_before_control_safety_last(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    names = [b.name for b in rig.node.engine.blocks]
    assert names == ["commands", "heartbeat", "redundancy", "control"]
    assert isinstance(rig.node.engine.blocks[2], RedundancyBlock)
    assert rig.node.engine.interlocks[-1] is rig.node.safety
    assert isinstance(rig.node.safety, SafetyLayer)
    rig.scan()
    # Control reads the voted input by name in the same scan.
    assert rig.control.voted[-1].value == 150.0
    assert rig.control.voted[-1].quality is Quality.GOOD
    assert "safety" in rig.node.get_status()


def test_failover_reaches_control_within_the_scan(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.scan(2)
    rig.node.live["pump1.flow"] = Sample.bad("sensor fault", 0.0)
    rig.fakes["pump2"].set_input("flow", 149.0)
    rig.scan()
    assert rig.control.voted[-1].value == 149.0
    assert rig.control.voted[-1].quality is Quality.SUBSTITUTED
    assert "failover" in rig.codes()


def test_trip_overrides_control_and_reset_needs_the_role(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.scan(2)
    assert rig.out("pump1.speed_ref") == 40.0
    rig.fakes["pump1"].set_input("flow", 5.0)
    rig.scan()
    assert rig.out("pump1.speed_ref") == 100.0  # in the scan that saw it
    rig.fakes["pump1"].set_input("flow", 150.0)
    rig.scan()
    assert rig.out("pump1.speed_ref") == 100.0  # latched
    rig.node.commands.submit(ResetTrip("workload_operator", source="hmi"))
    rig.scan()
    assert rig.out("pump1.speed_ref") == 100.0
    last = rig.node.commands.audit[-1]
    assert not last.accepted and "may not reset" in last.reason and last.source == "hmi"
    assert rig.codes()[-2:] == ["trip_reset_refused", "command_refused"]
    rig.node.commands.submit(ResetTrip("infrastructure_manager", "no_flow", source="hmi"))
    rig.scan()
    assert rig.node.commands.audit[-1].accepted
    assert rig.out("pump1.speed_ref") == 40.0
    assert "trip_reset" in rig.codes()


def test_force_needs_the_role_and_never_beats_a_trip(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.scan()
    rig.node.commands.submit(ForceOutput("pump1.speed_ref", 70.0, role="workload_operator"))
    rig.scan()
    assert rig.out("pump1.speed_ref") == 40.0
    assert "may not force" in rig.node.commands.audit[-1].reason
    rig.node.commands.submit(ForceOutput("pump1.speed_ref", 170.0, role="infrastructure_manager"))
    rig.node.commands.submit(ForceOutput("pump1.speed_ref", 70.0, role="infrastructure_manager"))
    rig.scan()
    audit = list(rig.node.commands.audit)[-2:]
    assert [a.accepted for a in audit] == [False, True]
    assert "outside 0.0..100.0" in audit[0].reason
    assert rig.out("pump1.speed_ref") == 70.0
    assert rig.node.image.output_quality["pump1.speed_ref"] is Quality.FORCED
    rig.fakes["pump1"].set_input("flow", 5.0)
    rig.scan()
    assert rig.out("pump1.speed_ref") == 100.0  # the trip wins over the force
    assert rig.node.safety.get_status()["overruled_forces"] == ["pump1.speed_ref"]
    rig.node.commands.submit(ReleaseForce("pump1.speed_ref", role="infrastructure_manager"))
    rig.node.commands.submit(ReleaseForce("pump9.speed_ref", role="infrastructure_manager"))
    rig.scan()
    assert rig.node.safety.forces == {}
    assert "unknown point 'pump9.speed_ref'" in rig.node.commands.audit[-1].reason


def test_comms_loss_drives_the_output_per_policy(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.scan(6)  # past the 0.5 s start-up grace
    assert rig.out("pump2.speed_ref") == 45.0
    rig.lose("pump2")
    rig.scan()
    assert rig.out("pump2.speed_ref") == 0.0  # zero, in the scan that saw it
    assert rig.out("pump1.speed_ref") == 40.0  # the other device is not touched
    assert "override" in rig.codes()
    rig.healthy()
    rig.scan()
    assert rig.out("pump2.speed_ref") == 45.0  # back under control: a zero policy does not latch


def test_manual_value_is_still_below_the_safety_layer(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.node.commands.submit(SetOutput("pump1.speed_ref", 20.0))
    rig.scan()
    assert rig.out("pump1.speed_ref") == 40.0  # control runs after the operator's value
    rig.fakes["pump1"].set_input("flow", 5.0)
    rig.scan()
    assert rig.out("pump1.speed_ref") == 100.0


def test_node_without_safety_section_refuses_nothing_it_should_not(tmp_path: Path) -> None:
    rig = Rig(tmp_path, safety="")
    rig.node.commands.submit(ResetTrip("infrastructure_manager"))
    rig.scan()
    rec = rig.node.commands.audit[-1]
    assert not rec.accepted and "nothing latched" in rec.reason
    assert [b.name for b in rig.node.engine.blocks] == ["commands", "heartbeat", "control"]


@pytest.mark.parametrize(("safety", "message"), [
    ('[safety.interlocks.x]\nwhen = "pump1.flow >> 3"\naction = "alarm"\n',
     "node.toml: [safety.interlocks.x] when: cannot parse"),
    ('[safety.interlocks.x]\nwhen = "pump1.flow < 3"\naction = "trip"\n'
     'outputs = { "pump7.speed_ref" = 0 }\n',
     "node.toml: [safety.interlocks.x] outputs: unknown output 'pump7.speed_ref'"),
    ('[safety.outputs."pump1.speed_ref"]\non_comms_loss = "explode"\n',
     "node.toml: [safety.outputs.\"pump1.speed_ref\"] on_comms_loss: must be one of"),
    ('[safety]\nstartup = 3\n', "node.toml: [safety] startup: unknown key"),
])
def test_safety_config_errors_name_file_section_key(tmp_path: Path, safety: str,
                                                    message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Rig(tmp_path, safety=safety)
    assert any(message in line for line in info.value.lines), info.value.lines


# -- control wiring: [control] / [smoothing] sections, mode and announcement commands ---------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_example_configs_build_their_role_blocks() -> None:
    clock = VirtualClock()
    cdu = load_node_config(EXAMPLES / "cdu.toml")
    node = assemble(cdu, clock=clock, watchdog_thread=False,
                driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                     for d in c.devices})
    assert [b.name for b in node.engine.blocks] == [
        "commands", "heartbeat", "thermal_preparation", "pumps", "supply_temp"]
    assert node.engine.interlocks[-1] is node.safety
    rack = load_node_config(EXAMPLES / "rack.toml")
    node = assemble(rack, clock=clock, watchdog_thread=False,
                driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                     for d in c.devices})
    assert [b.name for b in node.engine.blocks] == ["commands", "heartbeat", "smoothing"]


def _cdu_node() -> Node:
    return assemble(load_node_config(EXAMPLES / "cdu.toml"), clock=VirtualClock(),
                watchdog_thread=False,
                driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live)
                                                     for d in c.devices})


def test_control_mode_command_checks_role_loop_and_value() -> None:
    node = _cdu_node()
    cmds = [SetControlMode("supply_temp", "Override", 28.0, role="workload_operator"),
            SetControlMode("chiller", "Manual", 10.0, role="infrastructure_manager"),
            SetControlMode("supply_temp", "Override", 99.0, role="infrastructure_manager"),
            SetControlMode("supply_temp", "Sideways", None, role="infrastructure_manager"),
            SetControlMode("supply_temp", "Override", 28.0, role="infrastructure_manager")]
    for cmd in cmds:
        node.commands.submit(cmd)
    node.engine.scan_once(1000.1)
    audit = list(node.commands.audit)
    assert [a.accepted for a in audit] == [False, False, False, False, True]
    assert "may not do this" in audit[0].reason
    assert "no control loop 'chiller'" in audit[1].reason and "supply_temp" in audit[1].reason
    assert "99" in audit[2].reason
    assert "Automatic" in audit[3].reason  # names the choices
    status = node.get_status()["control"]["supply_temp"]
    assert "Override" in str(status)
    assert sum(e.code == "command_refused" for e in node.events.recent(100)) == 4


def test_announcement_goes_to_the_preparation_block() -> None:
    import json

    from edge_runtime.messages.models import WorkloadAnnouncement

    node = _cdu_node()
    vectors = Path(__file__).resolve().parent / "vectors" / "annex_a"
    msg = parse_as(WorkloadAnnouncement,
        json.loads((vectors / "valid_workload_announcement_full.json").read_text()))
    node.commands.submit(AnnounceWorkload(msg, role="workload_operator", source="site"))
    node.commands.submit(AnnounceWorkload(msg, role="grid_operator", source="site"))
    node.engine.scan_once(1000.1)
    audit = list(node.commands.audit)
    assert audit[-1].accepted is False and "may not do this" in audit[-1].reason
    assert msg.workload_id in audit[-2].command  # the audit names the workload
    assert audit[-2].accepted  # the virtual wall clock (2023) is before the announced start
    prep = node.get_status()["control"]["thermal_preparation"]
    assert [a["workload_id"] for a in prep["announcements"]] == [msg.workload_id]


@pytest.mark.parametrize(("extra", "message"), [
    ('[smoothing]\nramp_limit_kw_per_s = 5\n',
     "node.toml: [smoothing] (table): only for role rack"),
    ('[control.pumps]\npumps = ["pump1", "pump9"]\n', "node.toml: [control.pumps]"),
    ('[heat_recovery]\n',
     "node.toml: [heat_recovery.points] supply_temp: unknown input 'dh_supply_temp.temperature'"),
    ('[two_phase]\n[two_phase.points]\npressure = "pump1.flow"\n',
     "node.toml: [two_phase.points] inlet_temp: unknown input 'evap_in_temp.temperature'"),
])
def test_control_sections_checked_against_role_and_points(tmp_path: Path, extra: str,
                                                         message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Rig(tmp_path, safety=extra)
    assert any(line.startswith(message) or message in line for line in info.value.lines), \
        info.value.lines


def test_heat_recovery_block_built_after_the_cdu_blocks(tmp_path: Path) -> None:
    rig = Rig(tmp_path, safety="""
[heat_recovery]
[heat_recovery.points]
supply_temp = "pump1.flow"
return_temp = "pump2.flow"
flow = "pump1.speed_actual"
source_temp = "pump2.speed_actual"
it_power = "pump1.flow"
pump = "pump1.speed_ref"
heat_pump = "pump2.speed_ref"
""")
    # Rig passes its own blocks; the role registry builds the heat recovery block.
    from edge_runtime.assembly.roles import ROLE_BLOCKS, RoleContext

    ctx = RoleContext(events=rig.node.events, wall=rig.clock.wall, wall_offset=0.0, held={})
    assert [b.name for b in ROLE_BLOCKS["cdu"](rig.config, ctx)] == ["heat_recovery"]


def test_site_example_loads_its_mqtt_and_site_sections() -> None:
    cfg = load_node_config(EXAMPLES / "site.toml")
    assert cfg.role == "site" and cfg.devices == ()
    assert cfg.mqtt is not None and cfg.mqtt.client_id == "site-01" and cfg.mqtt.mqtt5
    assert cfg.coordinator is not None and cfg.coordinator.power_limit_kw == 200.0
    assert load_node_config(EXAMPLES / "cdu.toml").mqtt is None


def test_site_section_only_for_the_site_role(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Rig(tmp_path, safety='[site]\npower_limit_kw = 100.0\n[mqtt]\nhost = "h"\nport = 0\n')
    lines = info.value.lines
    assert any("node.toml: [site] (table): only for role site, not 'cdu'" in x for x in lines)
    assert any("node.toml: [mqtt] port: must be >= 1" in x for x in lines), lines
