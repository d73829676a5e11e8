"""Protections belong to the safety layer (issue 8 finding 3).

Two-phase high-high pressure (condenser full open) used to live in control/two_phase.py; a
technician's force is applied after control, in the safety layer, so a forced condenser valve
beat high-high. Now [two_phase] generates a safety-layer rule (safety/protections.py) that no
force or hold beats, and a control block that overwrites an operator's hold says so."""

from __future__ import annotations

from pathlib import Path

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.core.clock import VirtualClock
from edge_runtime.core.commands import ForceOutput, SetOutput
from edge_runtime.node import Node
from edge_runtime.safety.invariants import InvariantChecker
from tests.fakes import FakeDevice

DEVICES = {"loop_pressure": "pressure_transmitter", "evap_in_temp": "temperature_transmitter",
           "evap_out_temp": "temperature_transmitter", "liquid_flow": "flow_meter",
           "rack_meter": "rack_power_meter", "condenser_valve": "control_valve"}
VALVE = "condenser_valve.position_cmd"


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        text = '[node]\nname = "tp"\nrole = "cdu"\nscan_period_ms = 100\n'
        for unit, (name, model) in enumerate(DEVICES.items(), start=1):
            text += (f'[devices.{name}]\nio_map = "{model}"\nendpoint = "127.0.0.1:15020"\n'
                     f'unit_id = {unit}\n')
        text += "[two_phase]\npressure_setpoint_bar = 4.8\n[safety]\nstartup_s = 0.0\n"
        (tmp_path / "node.toml").write_text(text)
        self.clock = VirtualClock()
        self.node: Node = assemble(
            load_node_config(tmp_path / "node.toml"), clock=self.clock, watchdog_thread=False,
            driver_factory=lambda c, live, clk: {d.name: FakeDevice(d, live) for d in c.devices})
        self.fakes = {n: d for n, d in self.node.drivers.items() if isinstance(d, FakeDevice)}
        self.checker = InvariantChecker(self.node.safety, self.node.image, period_s=0.1)
        self.inputs(5.0)

    def inputs(self, pressure_bar: float) -> None:
        f = self.fakes
        f["loop_pressure"].set_input("pressure", pressure_bar)
        f["evap_in_temp"].set_input("temperature", 27.0)
        f["evap_out_temp"].set_input("temperature", 31.0)
        f["liquid_flow"].set_input("flow", 30.0)
        f["rack_meter"].set_input("power_kw", 100.0)

    def scan(self, n: int = 1) -> None:
        for _ in range(n):
            self.clock.advance(0.1)
            self.node.engine.scan_once(self.clock.monotonic())
            self.checker.check(self.clock.monotonic())

    def valve(self) -> float:
        return self.fakes["condenser_valve"].staged[-1][1]["position_cmd"]


def test_a_forced_condenser_valve_never_beats_high_high(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.scan(3)
    rig.node.commands.submit(ForceOutput(VALVE, 20.0, role="infrastructure_manager"))
    rig.scan()
    assert rig.valve() == 20.0  # the force holds while the pressure is normal
    rig.inputs(9.0)  # above pressure_high_high_bar (8.0)
    rig.scan()
    assert rig.valve() == 100.0  # old code: 20, the force beat the protection
    assert rig.node.safety.owner[VALVE] == "override:two_phase.pressure_high_high"
    assert VALVE in rig.node.safety.get_status()["overruled_forces"]
    rig.inputs(5.0)
    rig.scan()
    assert rig.valve() == 20.0  # protection over: the force is back
    assert rig.checker.violations == []


def test_operator_hold_beaten_by_a_block_raises_an_event(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.scan(3)
    rig.node.commands.submit(SetOutput(VALVE, 35.0))
    rig.scan()
    events = [e for e in rig.node.events.recent(50) if e.code == "hold_overridden"]
    assert len(events) == 1 and events[0].source == f"hold.{VALVE}"  # old code: silent
    rig.scan(3)
    assert sum(e.code == "hold_overridden" for e in rig.node.events.recent(50)) == 1  # once
