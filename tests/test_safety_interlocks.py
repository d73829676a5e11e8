"""Safety layer in simulated time: isolate, trip and latch, resets, forces, comms loss, config."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path

import pytest

from edge_runtime.config.reader import ConfigError, ErrorLog
from edge_runtime.config.schema import Limits
from edge_runtime.core.clock import VirtualClock
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import NEVER_READ, Quality, Sample
from edge_runtime.core.scan import ScanEngine
from edge_runtime.safety.config import build_safety_layer, device_points, load_safety
from edge_runtime.safety.interlocks import Action, Rule, SafetyLayer
from edge_runtime.safety.limits import Compare
from edge_runtime.safety.redundancy import DerivedImage, RedundancyBlock
from tests.fakes import FakeDevice, device, load_map, write_io_map

PUMP = """
[device]
model = "t_pump"
[points.control_word]
address = 0
type = "uint16"
access = "w"
class = "pump"
min = 0
max = 3
failsafe = 1
max_hold_s = 2.0
[points.speed_ref]
address = 1
type = "uint16"
access = "w"
class = "pump"
scale = 0.01
min = 0.0
max = 100.0
failsafe = 100.0
max_hold_s = 2.0
[points.status_word]
address = 10
type = "uint16"
[points.speed_actual]
address = 11
type = "uint16"
scale = 0.01
"""
VALVE = """
[device]
model = "t_valve"
[points.position_cmd]
address = 0
type = "uint16"
access = "w"
class = "valve"
scale = 0.01
min = 0.0
max = 100.0
failsafe = 100.0
max_hold_s = 2.0
[points.position_fb]
address = 1
type = "uint16"
scale = 0.01
"""
LEAK = """
[device]
model = "t_leak"
[points.leak_state]
address = 0
type = "uint16"
[points.status]
address = 2
type = "uint16"
"""
TEMP = """
[device]
model = "t_temp"
[points.temperature]
table = "input"
address = 0
type = "int16"
scale = 0.01
unit = "degC"
"""
# device name -> model; supply_temp_a carries device limits like examples/cdu.toml.
DEVICES = {"pump1": "t_pump", "valve": "t_valve", "leak": "t_leak",
           "supply_temp_a": "t_temp", "supply_temp_b": "t_temp", "supply_temp_c": "t_temp"}
TEMP_LIMITS = {"temperature": Limits(low=15.0, high=40.0, high_high=45.0, hysteresis=0.5)}
# What the plant reads before the first scan: everything healthy.
HEALTHY: dict[str, float] = {
    "pump1.status_word": 1, "pump1.speed_actual": 60.0, "valve.position_fb": 50.0,
    "leak.leak_state": 0, "leak.status": 0, "supply_temp_a.temperature": 30.0,
    "supply_temp_b.temperature": 30.0, "supply_temp_c.temperature": 30.0,
}
CONTROL = {"pump1.control_word": 1.0, "pump1.speed_ref": 60.0, "valve.position_cmd": 50.0}


class Control:
    """Stands for the control blocks: writes fixed values every scan."""

    name = "control"

    def __init__(self, values: Mapping[str, float]) -> None:
        self.values = dict(values)
        self.seen: list[Sample] = []

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        for point, value in self.values.items():
            image.write(point, value)


class Plant:
    """A CDU-like node over FakeDevices, with its safety layer, stepped scan by scan."""

    def __init__(self, tmp_path: Path, safety_toml: str, *, derive: bool = True,
                 estimation: bool = False) -> None:
        for text in (PUMP, VALVE, LEAK, TEMP):
            model = tomllib.loads(text)["device"]["model"]
            write_io_map(tmp_path, model, text)
        devices = [dataclasses.replace(
            device(load_map(tmp_path / f"{model}.toml"), name=name, unit_id=i + 1),
            limits=TEMP_LIMITS if name == "supply_temp_a" else {})
            for i, (name, model) in enumerate(DEVICES.items())]
        self.live: dict[str, Sample] = {}
        self.image = (DerivedImage if derive else ProcessImage)(devices, self.live)
        self.fakes = {d.name: FakeDevice(d, self.live) for d in devices}
        inputs, outputs, limits = device_points(devices)
        errors = ErrorLog()
        cfg = load_safety(tomllib.loads(safety_toml).get("safety", {}), "cdu.toml", inputs,
                          outputs, errors, limits=limits)
        errors.raise_if_any()
        self.events = EventLog()
        self.safety: SafetyLayer = build_safety_layer(cfg, self.events)
        self.control = Control(CONTROL)
        blocks: list[Control | RedundancyBlock] = [self.control]
        if estimation:
            blocks.insert(0, RedundancyBlock(list(self.safety.groups.values())))
        self.engine = ScanEngine(clock=VirtualClock(), period_s=0.1, image=self.image,
                                 drivers=self.fakes, blocks=blocks, interlocks=[self.safety],
                                 events=self.events)
        self.t = 1000.0
        for point, value in HEALTHY.items():
            self.set(point, value)

    def set(self, point: str, value: float | None, quality: Quality = Quality.GOOD) -> None:
        """Publish an input sample as the driver would."""
        dev, name = point.split(".", 1)
        self.fakes[dev].set_input(name, value, quality, ts=self.t)

    def bad(self, point: str, reason: str = "sensor fault") -> None:
        """Mark an input BAD."""
        self.live[point] = Sample.bad(reason, self.t)

    def scan(self, n: int = 1) -> None:
        """Run n scans, 100 ms apart."""
        for _ in range(n):
            self.t = round(self.t + 0.1, 6)
            self.engine.scan_once(self.t)

    def out(self, point: str) -> float:
        """Value handed to the driver at the last flush."""
        dev, name = point.split(".", 1)
        return self.fakes[dev].staged[-1][1][name]

    def codes(self) -> list[str]:
        """Event codes so far, oldest first."""
        return [e.code for e in self.events.recent(1000)]


LEAK_ISOLATE = """
[safety.interlocks.leak_isolate]
when = "leak.leak_state == 1"
action = "isolate"
outputs = {"pump1.control_word" = 0, "valve.position_cmd" = 0}
latch = true
reset_role = "infrastructure_manager"
"""

OVERTEMP_TRIP = """
[safety.interlocks.overtemp]
when = "supply_temp_a.temperature >= high_high"
action = "trip"
outputs = ["pump1.speed_ref", "valve.position_cmd"]
"""


def test_leak_isolates_within_the_same_scan(tmp_path: Path) -> None:
    plant = Plant(tmp_path, LEAK_ISOLATE)
    plant.scan()
    assert plant.out("pump1.control_word") == 1.0 and plant.out("valve.position_cmd") == 50.0
    plant.set("leak.leak_state", 1)
    plant.scan()  # the very scan that latches leak_state = 1 flushes the isolate values
    assert plant.out("pump1.control_word") == 0.0
    assert plant.out("valve.position_cmd") == 0.0
    assert plant.out("pump1.speed_ref") == 60.0  # not in the isolate set: control keeps it
    assert plant.codes() == ["interlock", "isolate"]
    assert plant.events.recent(1)[0].severity is Severity.CRITICAL
    plant.scan(10)
    assert plant.codes() == ["interlock", "isolate"]  # transitions only, never per scan


def test_trip_latches_until_authorised_reset_after_condition_clears(tmp_path: Path) -> None:
    plant = Plant(tmp_path, OVERTEMP_TRIP)
    plant.scan()
    assert plant.out("pump1.speed_ref") == 60.0
    plant.set("supply_temp_a.temperature", 46.0)
    plant.scan()
    assert plant.out("pump1.speed_ref") == 100.0 and plant.out("valve.position_cmd") == 100.0
    assert plant.safety.get_status()["latched"] == ["overtemp"]

    refused = plant.safety.reset("infrastructure_manager")
    assert [(o.accepted, o.reason) for o in refused] == [
        (False, "supply_temp_a.temperature >= high_high is still present")]
    plant.set("supply_temp_a.temperature", 44.8)  # below 45 but inside the 0.5 hysteresis
    plant.scan()
    assert not plant.safety.reset("infrastructure_manager")[0].accepted
    plant.set("supply_temp_a.temperature", 44.0)
    plant.scan(5)
    status = plant.safety.get_status()
    assert status["active"] == [] and status["latched"] == ["overtemp"]
    assert plant.out("pump1.speed_ref") == 100.0  # cleared, but latched

    wrong = plant.safety.reset("workload_operator", "overtemp", source="https")
    assert not wrong[0].accepted and "may not reset" in wrong[0].reason
    plant.scan()
    assert plant.out("pump1.speed_ref") == 100.0
    ok = plant.safety.reset("infrastructure_manager", "overtemp")
    assert ok[0].accepted
    plant.scan()
    assert plant.out("pump1.speed_ref") == 60.0 and plant.out("valve.position_cmd") == 50.0
    audits = [e for e in plant.events.recent(1000) if e.code.startswith("trip_reset")]
    assert [e.code for e in audits] == ["trip_reset_refused"] * 3 + ["trip_reset"]
    assert "workload_operator via https refused" in audits[2].message
    assert plant.safety.get_status()["counts"] == {
        "raised": 1, "engaged": 1, "resets": 1, "refused_resets": 3}


def test_reset_of_nothing_is_refused_and_audited(tmp_path: Path) -> None:
    plant = Plant(tmp_path, OVERTEMP_TRIP)
    plant.scan()
    assert plant.safety.reset("infrastructure_manager")[0].reason == "nothing latched"
    assert plant.safety.reset("infrastructure_manager", "nope")[0].reason == "no such interlock"
    assert plant.codes() == ["trip_reset_refused", "trip_reset_refused"]


def test_force_applies_after_control_but_never_beats_a_trip(tmp_path: Path) -> None:
    plant = Plant(tmp_path, OVERTEMP_TRIP)
    plant.safety.force("pump1.speed_ref", 30.0, source="commissioning")
    plant.scan()
    assert plant.out("pump1.speed_ref") == 30.0
    qualities = [plant.image.output_quality["pump1.speed_ref"]]
    plant.set("supply_temp_a.temperature", 50.0)
    plant.scan()
    assert plant.out("pump1.speed_ref") == 100.0  # the trip wins over the force
    qualities.append(plant.image.output_quality["pump1.speed_ref"])
    assert qualities == [Quality.FORCED, Quality.GOOD]
    status = plant.safety.get_status()
    assert status["overruled_forces"] == ["pump1.speed_ref"]
    assert status["owners"]["pump1.speed_ref"] == "trip:overtemp"
    assert "force overruled by trip:overtemp" in plant.events.recent(1)[0].message
    plant.set("supply_temp_a.temperature", 30.0)
    plant.scan()
    assert plant.safety.reset("infrastructure_manager")[0].accepted
    plant.scan()
    assert plant.out("pump1.speed_ref") == 30.0  # the force is back once the trip is reset
    plant.safety.release("pump1.speed_ref")
    plant.scan()
    assert plant.out("pump1.speed_ref") == 60.0


def test_force_out_of_range_is_dropped_with_an_event(tmp_path: Path) -> None:
    plant = Plant(tmp_path, "")
    plant.safety.force("pump1.speed_ref", 150.0)
    plant.scan()
    assert plant.out("pump1.speed_ref") == 60.0 and plant.safety.forces == {}
    assert "force dropped" in plant.events.recent(1)[0].message


def test_bad_quality_trips_and_latches(tmp_path: Path) -> None:
    plant = Plant(tmp_path, """
[safety.inputs."leak.leak_state"]
on_bad = "trip"
outputs = ["valve.position_cmd"]
""")
    plant.scan()
    assert plant.out("valve.position_cmd") == 50.0
    plant.bad("leak.leak_state", "cable break")
    plant.scan()
    assert plant.out("valve.position_cmd") == 100.0  # failsafe of the valve
    assert plant.safety.get_status()["latched"] == ["bad.leak.leak_state"]
    plant.set("leak.leak_state", 0)
    plant.scan()
    assert plant.out("valve.position_cmd") == 100.0
    assert plant.safety.reset("infrastructure_manager")[0].accepted
    plant.scan()
    assert plant.out("valve.position_cmd") == 50.0


def test_bad_input_is_never_read_as_in_range(tmp_path: Path) -> None:
    plant = Plant(tmp_path, """
[safety.interlocks.hot]
when = "supply_temp_a.temperature > 35"
action = "override"
outputs = {"pump1.speed_ref" = 90}
""")
    plant.set("supply_temp_a.temperature", 38.0)
    plant.scan()
    assert plant.out("pump1.speed_ref") == 90.0
    plant.bad("supply_temp_a.temperature")
    plant.scan(3)
    # Unknown is not "cool again": the override holds, and says why once.
    assert plant.out("pump1.speed_ref") == 90.0
    assert plant.codes().count("interlock_unknown") == 1
    assert plant.safety.get_status()["unknown"] == ["hot"]
    plant.set("supply_temp_a.temperature", 30.0)
    plant.scan()
    assert plant.out("pump1.speed_ref") == 60.0  # an override does not latch
    assert "interlock_unknown_clear" in plant.codes()


def test_substitute_keeps_an_interlock_working_on_a_bad_sensor(tmp_path: Path) -> None:
    plant = Plant(tmp_path, OVERTEMP_TRIP + """
[safety.inputs."supply_temp_a.temperature"]
on_bad = "substitute"
substitute = "supply_temp_b.temperature"
""")
    plant.bad("supply_temp_a.temperature")
    plant.set("supply_temp_b.temperature", 47.0)
    plant.scan()
    assert plant.out("pump1.speed_ref") == 100.0
    assert plant.safety.get_status()["substituted"] == ["supply_temp_a.temperature"]
    assert plant.codes()[:2] == ["substitute", "limit"]


def test_graceful_shutdown_after_reaction_delay_in_listed_order(tmp_path: Path) -> None:
    plant = Plant(tmp_path, """
[safety.interlocks.leak]
when = "leak.leak_state == 1"
action = "isolate"
reaction = "graceful_shutdown"
reaction_delay_s = 0.3
step_s = 0.5
outputs = {"pump1.speed_ref" = 0, "pump1.control_word" = 0, "valve.position_cmd" = 0}
""")
    plant.set("leak.leak_state", 1)
    seen = []
    for _ in range(15):
        plant.scan()
        seen.append((plant.out("pump1.speed_ref"), plant.out("pump1.control_word"),
                     plant.out("valve.position_cmd")))
    assert seen[:3] == [(60.0, 1.0, 50.0)] * 3  # raised at scan 0, reaction after 0.3 s
    assert seen[3:8] == [(0.0, 1.0, 50.0)] * 5
    assert seen[8:13] == [(0.0, 0.0, 50.0)] * 5
    assert seen[13:] == [(0.0, 0.0, 0.0)] * 2


def test_reaction_none_only_alarms_and_delay_cancels_short_leaks(tmp_path: Path) -> None:
    plant = Plant(tmp_path, """
[safety.interlocks.leak_watch]
when = "leak.leak_state == 1"
action = "isolate"
reaction = "none"
outputs = {"valve.position_cmd" = 0}

[safety.interlocks.leak]
when = "leak.leak_state == 1"
action = "isolate"
reaction_delay_s = 0.5
outputs = {"pump1.control_word" = 0}
""")
    plant.set("leak.leak_state", 1)
    plant.scan(3)
    plant.set("leak.leak_state", 0)  # dried before the reaction delay ran out
    plant.scan(10)
    assert plant.out("valve.position_cmd") == 50.0 and plant.out("pump1.control_word") == 1.0
    assert plant.codes() == ["interlock", "interlock", "interlock_clear", "interlock_clear"]
    assert plant.safety.get_status()["latched"] == []


def test_rule_delay_counts_scans(tmp_path: Path) -> None:
    plant = Plant(tmp_path, """
[safety.interlocks.hot]
when = "supply_temp_b.temperature > 35"
action = "override"
delay_s = 0.3
outputs = {"pump1.speed_ref" = 90}
""")
    plant.set("supply_temp_b.temperature", 38.0)
    speeds = []
    for _ in range(5):
        plant.scan()
        speeds.append(plant.out("pump1.speed_ref"))
    assert speeds == [60.0, 60.0, 60.0, 90.0, 90.0]  # seen at scan 0, raised 0.3 s later


def test_isolate_beats_override_on_the_same_output(tmp_path: Path) -> None:
    plant = Plant(tmp_path, """
[safety.interlocks.hot]
when = "supply_temp_a.temperature > 35"
action = "override"
outputs = {"valve.position_cmd" = 100}

[safety.interlocks.leak]
when = "leak.leak_state == 1"
action = "isolate"
outputs = {"valve.position_cmd" = 0}
""")
    plant.set("supply_temp_a.temperature", 38.0)
    plant.scan()
    assert plant.out("valve.position_cmd") == 100.0
    plant.set("leak.leak_state", 1)
    plant.scan()
    assert plant.out("valve.position_cmd") == 0.0


def test_bit_condition_and_status(tmp_path: Path) -> None:
    plant = Plant(tmp_path, """
[safety.interlocks.cable_break]
when = "bit(leak.status, 0) == 1"
action = "alarm"
severity = "warning"
""")
    plant.set("leak.status", 0b110)
    plant.scan()
    plant.set("leak.status", 0b111)
    plant.scan()
    status = plant.safety.get_status()
    assert status["active"] == ["cable_break"] and status["engaged"] == []
    assert status["rules"]["cable_break"]["when"] == "bit(leak.status, 0) == 1"
    assert plant.events.recent(1)[0].severity is Severity.WARNING


def test_a_rule_on_a_missing_point_faults_once_and_the_rest_still_acts(tmp_path: Path) -> None:
    plant = Plant(tmp_path, LEAK_ISOLATE)
    ghost = Rule("ghost", Compare("pump9.flow", ">", 1.0), Action.ALARM)
    plant.safety = SafetyLayer([ghost, *plant.safety.rules], events=plant.events)
    plant.engine.interlocks = [plant.safety]
    plant.set("leak.leak_state", 1)
    plant.scan(3)
    assert plant.out("valve.position_cmd") == 0.0
    assert plant.codes().count("interlock_fault") == 1


def test_a_crashing_safety_layer_leaves_failsafe_outputs(tmp_path: Path) -> None:
    class Broken:
        def evaluate(self, view: object) -> bool | None:
            raise RuntimeError("bug")

    plant = Plant(tmp_path, "")
    plant.safety = SafetyLayer([Rule("broken", Broken(), Action.ALARM)],  # type: ignore[arg-type]
                               events=plant.events)
    plant.engine.interlocks = [plant.safety]
    plant.scan()
    assert plant.out("pump1.speed_ref") == 100.0 and plant.out("valve.position_cmd") == 100.0
    assert plant.codes() == ["scan_fault"]


COMMS = """
[safety.outputs."pump1.speed_ref"]
on_comms_loss = "hold"
[safety.outputs."valve.position_cmd"]
on_comms_loss = "trip"
[safety.outputs."pump1.control_word"]
on_comms_loss = "zero"
"""


def test_comms_loss_policies_per_output(tmp_path: Path) -> None:
    plant = Plant(tmp_path, COMMS)
    plant.scan()
    plant.control.values["pump1.speed_ref"] = 70.0
    for point in ("pump1.status_word", "pump1.speed_actual"):
        plant.bad(point, "timeout")  # the driver marks all of a device's points BAD
    plant.scan()
    assert plant.out("pump1.speed_ref") == 60.0  # held at the last value sent
    assert plant.out("pump1.control_word") == 0.0
    assert plant.out("valve.position_cmd") == 50.0  # the valve still answers
    for point in ("pump1.status_word", "pump1.speed_actual"):
        plant.set(point, 1.0)
    plant.scan()
    assert plant.out("pump1.speed_ref") == 70.0 and plant.out("pump1.control_word") == 1.0
    plant.bad("valve.position_fb", "timeout")
    plant.scan()
    plant.set("valve.position_fb", 50.0)
    plant.scan()
    assert plant.out("valve.position_cmd") == 100.0  # trip: failsafe, latched
    assert plant.safety.get_status()["latched"] == ["comms.valve.position_cmd"]


def test_unread_devices_count_as_lost_only_after_startup(tmp_path: Path) -> None:
    plant = Plant(tmp_path, "[safety]\nstartup_s = 1.0\n" + COMMS)
    plant.live["valve.position_fb"] = NEVER_READ  # the valve has not answered yet
    plant.scan(10)  # start-up grace: t0 .. t0 + 0.9 s
    assert plant.out("valve.position_cmd") == 50.0 and plant.codes() == []
    plant.scan()
    assert plant.out("valve.position_cmd") == 100.0
    assert plant.safety.get_status()["comms_lost"] == ["valve"]


# -- config -------------------------------------------------------------------------------------
def _load(text: str) -> list[str]:
    known_in = set(HEALTHY)
    known_out = set(CONTROL)
    errors = ErrorLog()
    load_safety(tomllib.loads(text).get("safety", {}), "cdu.toml", known_in, known_out, errors,
                limits={"supply_temp_a.temperature": TEMP_LIMITS["temperature"]})
    return errors.lines


def test_example_config_loads_clean() -> None:
    assert _load(LEAK_ISOLATE + OVERTEMP_TRIP + COMMS) == []


@pytest.mark.parametrize(("text", "expected"), [
    ('[safety.interlocks.x]\nwhen = "leak.leak_state = 1"\naction = "alarm"',
     "cdu.toml: [safety.interlocks.x] when: cannot parse 'leak.leak_state = 1'"),
    ('[safety.interlocks.x]\nwhen = "__import__(\'os\')"\naction = "alarm"',
     "[safety.interlocks.x] when: cannot parse"),
    ('[safety.interlocks.x]\nwhen = "leak.nope == 1"\naction = "alarm"',
     "[safety.interlocks.x] when: unknown input 'leak.nope'"),
    ('[safety.interlocks.x]\nwhen = "supply_temp_a.temperature <= low_low"\naction = "alarm"',
     "[safety.interlocks.x] when: supply_temp_a.temperature has no low_low limit"),
    ('[safety.interlocks.x]\nwhen = "supply_temp_b.temperature >= high"\naction = "alarm"',
     "[safety.interlocks.x] when: supply_temp_b.temperature has no limits"),
    ('[safety.interlocks.x]\nwhen = "leak.leak_state == 1"\naction = "explode"',
     "[safety.interlocks.x] action: must be one of alarm, override, trip, isolate"),
    ('[safety.interlocks.x]\nwhen = "leak.leak_state == 1"\naction = "isolate"\n'
     'outputs = {"pump9.speed_ref" = 0}',
     "[safety.interlocks.x] outputs: unknown output 'pump9.speed_ref'"),
    ('[safety.interlocks.x]\nwhen = "leak.leak_state == 1"\naction = "isolate"',
     "[safety.interlocks.x] outputs: required for action isolate"),
    ('[safety.interlocks.x]\nwhen = "leak.leak_state == 1"\naction = "trip"\n'
     'outputs = ["valve.position_cmd"]\nreset_role = "janitor"',
     "[safety.interlocks.x] reset_role: must be one or a list of"),
    ('[safety.interlocks.x]\nwhen = "leak.leak_state == 1"\naction = "alarm"\nlatch = true',
     "[safety.interlocks.x] latch: an alarm has no outputs to latch"),
    ('[safety.interlocks.x]\nwhen = "leak.leak_state == 1"\naction = "alarm"\nlatchh = true',
     "[safety.interlocks.x] latchh: unknown key"),
    ('[safety.interlocks.x]\nwhen = "leak.leak_state == 1"\naction = "isolate"\n'
     'outputs = {"valve.position_cmd" = 0}\nstep_s = 2',
     "[safety.interlocks.x] step_s: only with reaction = \"graceful_shutdown\""),
    ('[safety.inputs."leak.leak_state"]\non_bad = "substitute"',
     '[safety.inputs."leak.leak_state"] substitute: required'),
    ('[safety.outputs."pump1.speed_ref"]\non_comms_loss = "pray"',
     '[safety.outputs."pump1.speed_ref"] on_comms_loss: must be one of hold, zero'),
    ('[safety.outputs."pump1.nope"]\non_comms_loss = "hold"',
     "[safety.outputs.\"pump1.nope\"] (point): unknown output 'pump1.nope'"),
    ('[safety]\nwatchdog = 1', "cdu.toml: [safety] watchdog: unknown key"),
])
def test_config_errors_name_file_section_and_key(text: str, expected: str) -> None:
    lines = _load(text)
    assert any(expected in line for line in lines), lines


def test_config_range_checked_when_output_specs_are_known(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pump1.speed_ref = 150 is outside 0.0..100.0"):
        Plant(tmp_path, '[safety.interlocks.x]\nwhen = "leak.leak_state == 1"\n'
                        'action = "override"\noutputs = {pump1.speed_ref = 150}')


def test_config_refuses_a_fraction_for_an_integer_register(tmp_path: Path) -> None:
    """The scan never rounds an integer register, so neither may an interlock's value."""
    with pytest.raises(ConfigError, match=r"pump1.control_word = 0.5: an integer register"):
        Plant(tmp_path, '[safety.interlocks.x]\nwhen = "leak.leak_state == 1"\n'
                        'action = "isolate"\noutputs = {pump1.control_word = 0.5}')
