"""Supply-temperature control, valve feedback check, predictive thermal preparation and the
[control] loader, against the plant model in simulated time."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.config.reader import ErrorLog
from edge_runtime.control.cdu_config import build_cdu_blocks, load_cdu_control
from edge_runtime.control.modes import ControlMode
from edge_runtime.control.pumps import PumpControl
from edge_runtime.control.thermal import (
    HeatAnnouncement,
    HeatExchangerModel,
    SupplyTemperatureControl,
    ThermalPreparation,
    heat_announcement,
)
from edge_runtime.core.events import EventLog
from edge_runtime.core.scan import ControlBlock
from edge_runtime.messages.annex_a import parse_as
from edge_runtime.messages.models import WorkloadAnnouncement
from pswd_plant_sim.image_bridge import PlantImageBridge
from pswd_plant_sim.loop import LoopConfig
from pswd_plant_sim.model import Plant, PlantConfig
from pswd_plant_sim.trace import ConstantPower, PowerSource, TraceConfig

pytestmark = pytest.mark.timeout(40)
DT = 0.1
WALL0 = 1_700_000_000.0
SP = 30.0

CONTROL: dict[str, Any] = {
    "supply_temp": {"sensor": "supply_temp.temperature", "valve": "valve", "setpoint_c": SP},
    "pumps": {"pumps": ["pump1", "pump2"], "flow_sensor": "flow.flow", "setpoint": 160.0,
              "rate_limit_pct_per_s": 20.0, "low_flow_lpm": 40.0},
    "preparation": {"return_sensor": "return_temp.temperature", "design_delta_t_k": 8.0,
                    "min_flow_lpm": 160.0, "max_flow_lpm": 190.0},
}


class Rig:
    """Plant + image bridge + the blocks the loader builds, stepped together."""

    def __init__(self, power: PowerSource, control: dict[str, Any] | None = None) -> None:
        self.plant = Plant(PlantConfig(loop=LoopConfig(initial_temp_c=SP)), power=power)
        self.bridge = PlantImageBridge(self.plant)
        self.image = self.bridge.image
        errors = ErrorLog()
        cfg = load_cdu_control(CONTROL if control is None else control, "cdu.toml", errors,
                               self.image.inputs_info, self.image.outputs_info)
        assert not errors.lines, errors.lines
        self.events = EventLog()
        self.held: dict[str, float] = {}
        self.blocks: list[ControlBlock] = build_cdu_blocks(
            cfg, self.events, wall=lambda: self.plant.t + WALL0, held=self.held)
        self.t = 0.0

    def block(self, kind: type[Any]) -> Any:
        return next(b for b in self.blocks if isinstance(b, kind))

    def run(self, seconds: float, each: Any = None) -> None:
        for _ in range(round(seconds / DT)):
            self.image.latch()
            for b in self.blocks:
                b.step(self.image, self.t, DT)
            self.bridge.exchange(DT)
            self.t += DT
            if each is not None:
                each()


def test_steady_state_supply_within_half_a_degree_and_flow_within_one_percent() -> None:
    rig = Rig(ConstantPower(120.0))
    rig.run(600.0)
    temps: list[float] = []
    flows: list[float] = []

    def sample() -> None:
        temps.append(rig.plant.loop.supply_c)
        flows.append(rig.plant.loop.flow_lpm)

    rig.run(120.0, sample)
    assert max(abs(t - SP) for t in temps) <= 0.5  # spec 6.3.1 c, 9.1.1 b
    flow_sp = rig.block(PumpControl).loop.pid.setpoint
    assert max(abs(f - flow_sp) for f in flows) <= 0.01 * flow_sp  # spec 9.1.1 a


def test_supply_held_under_the_bursty_training_load() -> None:
    from pswd_plant_sim.trace import Trace

    rig = Rig(Trace(TraceConfig(seed=3, rack_kw=120.0)))
    rig.run(400.0)
    temps: list[float] = []
    rig.run(120.0, lambda: temps.append(rig.plant.loop.supply_c))
    assert max(abs(t - SP) for t in temps) <= 0.5


def test_modes_on_the_valve_loop() -> None:
    rig = Rig(ConstantPower(80.0))
    supply = rig.block(SupplyTemperatureControl)
    rig.run(200.0)
    supply.set_mode("Manual", 40.0)
    rig.run(1.0)
    assert rig.image.output("valve.position_cmd") == 40.0
    with pytest.raises(ValueError, match=r"outside 15\.\.45"):
        supply.set_mode("Override", 50.0)
    assert supply.loop.mode.mode is ControlMode.MANUAL
    supply.set_mode("Override", 27.0)
    before = rig.image.output("valve.position_cmd")
    rig.run(0.1)
    assert abs(rig.image.output("valve.position_cmd") - before) < 1.0  # bumpless hand-over
    rig.run(400.0)
    assert rig.plant.loop.supply_c == pytest.approx(27.0, abs=0.5)
    supply.set_mode("Disabled")
    rig.image.write("valve.position_cmd", 63.0)  # someone else's value stays
    rig.run(1.0)
    assert rig.image.output("valve.position_cmd") == 63.0


def test_operator_held_valve_is_not_overwritten_and_release_is_bumpless() -> None:
    rig = Rig(ConstantPower(80.0))
    rig.run(200.0)
    rig.held["valve.position_cmd"] = 35.0
    rig.image.write("valve.position_cmd", 35.0)  # as ManualOutputs does before the blocks
    rig.run(5.0)
    assert rig.image.output("valve.position_cmd") == 35.0
    del rig.held["valve.position_cmd"]
    rig.run(0.1)
    assert rig.image.output("valve.position_cmd") == pytest.approx(35.0, abs=1.0)


def test_bad_supply_sensor_holds_the_valve() -> None:
    rig = Rig(ConstantPower(80.0))
    rig.run(200.0)
    held = rig.image.output("valve.position_cmd")
    rig.bridge.bad.add("supply_temp.temperature")
    rig.run(30.0)
    assert rig.image.output("valve.position_cmd") == pytest.approx(held)


def test_stuck_valve_raises_an_alarm_and_stops_the_integrator() -> None:
    rig = Rig(ConstantPower(60.0))
    rig.run(200.0)
    supply = rig.block(SupplyTemperatureControl)
    rig.plant.loop.valve.stuck = True
    rig.plant.power = ConstantPower(150.0)  # the loop now wants the valve to open
    rig.run(30.0)
    assert any(e.code == "valve_feedback" for e in rig.events.recent(50))
    assert not supply.valve.following
    integral = supply.loop.pid.integral
    rig.run(30.0)
    assert supply.loop.pid.integral == pytest.approx(integral)
    rig.plant.loop.valve.stuck = False
    rig.run(30.0)
    assert supply.valve.following
    assert any(e.code == "valve_feedback_ok" for e in rig.events.recent(50))


class Step:
    def __init__(self, base: float, peak: float, at: float) -> None:
        self.base, self.peak, self.at = base, peak, at

    def power_at(self, t: float) -> float:
        return self.peak if t >= self.at else self.base


def test_announcement_prepositions_pumps_and_valve_before_the_load() -> None:
    rig = Rig(Step(40.0, 150.0, 400.0))
    prep = rig.block(ThermalPreparation)
    rig.run(390.0)
    valve0 = rig.image.output("valve.position_cmd")
    speed0 = rig.plant.loop.pumps[0].speed_pct
    prep.announce(HeatAnnouncement(110.0, WALL0 + 400.0, 120.0, "w1"))
    rig.run(9.9)  # up to the load start
    assert rig.plant.loop.pumps[0].speed_pct > speed0 + 3.0  # pumps already faster
    assert rig.image.output("valve.position_cmd") > valve0  # valve already moving
    assert prep.get_status()["announcements"][0]["workload_id"] == "w1"
    peak = 0.0

    def track() -> None:
        nonlocal peak
        peak = max(peak, abs(rig.plant.loop.supply_c - SP))

    rig.run(110.0, track)
    assert peak < 0.5
    # After the announced duration the preparation lets go of its bias and forgets it.
    rig.plant.power = ConstantPower(150.0)
    rig.run(200.0)
    assert not prep.active
    assert prep.valve_bias_pct(rig.t, DT, SP) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("ann", "why"), [
    (HeatAnnouncement(-5.0, WALL0 + 10.0, 60.0), "outside 0"),
    (HeatAnnouncement(float("nan"), WALL0 + 10.0, 60.0), "number"),
    (HeatAnnouncement(10.0, WALL0 + 10.0, 0.0), "duration"),
    (HeatAnnouncement(10.0, WALL0 - 100.0, 60.0), "already ended"),
])
def test_bad_announcements_are_refused(ann: HeatAnnouncement, why: str) -> None:
    rig = Rig(ConstantPower(40.0))
    with pytest.raises(ValueError, match=why):
        rig.block(ThermalPreparation).announce(ann)


def test_disabled_preparation_refuses_announcements() -> None:
    control = copy.deepcopy(CONTROL)
    control["feedforward"] = False
    rig = Rig(ConstantPower(40.0), control)
    with pytest.raises(ValueError, match="disabled"):
        rig.block(ThermalPreparation).announce(HeatAnnouncement(10.0, WALL0 + 5.0, 60.0))


def test_heat_announcement_from_an_annex_a_message() -> None:
    msg = parse_as(WorkloadAnnouncement, {
        "PSWD_version": "1.0", "message_type": "workload_announcement",
        "timestamp": "2026-11-27T00:00:00Z", "workload_id": "job-7",
        "workload_type": "ai_training",
        "power_profile": {"peak_power_mw": 200, "baseline_power_mw": 40,
                          "ramp_rate_mw_per_sec": 5000, "duration_estimate_sec": 600},
        "thermal_profile": {"heat_generation_kw": 190000},
        "timing_constraints": {"earliest_start_time": "2026-11-27T00:00:01Z"}})
    ann = heat_announcement(msg, share=0.001)
    assert ann.heat_kw == pytest.approx(190.0)
    assert ann.start_wall == datetime(2026, 11, 27, 0, 0, 1, tzinfo=UTC).timestamp()
    assert ann.duration_s == 600.0 and ann.workload_id == "job-7"
    no_heat = parse_as(WorkloadAnnouncement, {**msg.to_dict(), "thermal_profile": {}})
    with pytest.raises(ValueError, match="heat_generation_kw"):
        heat_announcement(no_heat)


def test_heat_exchanger_model_inverts_the_plant() -> None:
    # The feedforward's model against the plant's own steady state at a fixed valve.
    plant = Plant(PlantConfig(loop=LoopConfig(initial_temp_c=SP)), power=ConstantPower(100.0))
    plant.loop.pump(1).command(run=True, speed_ref_pct=80.0)
    plant.loop.valve.cmd_pct = 70.0
    for _ in range(3000):
        plant.step(0.5)
    loop = plant.loop
    model = HeatExchangerModel()
    assert model.heat_kw(loop.flow_lpm, loop.return_c, loop.supply_c) == pytest.approx(100.0,
                                                                                      rel=0.01)
    assert model.valve_for(100.0, loop.flow_lpm, loop.supply_c) == pytest.approx(70.0, abs=0.5)


# -- feedforward with a wrong model ------------------------------------------------------------
# The tests above give the feedforward exactly the plant's own design data (UA 25 kW/K, facility
# water 250 L/min at full open, coolant 1025 kg/m3). A real loop's data sheet is off, and fouling
# moves UA: here the controller's [control.preparation.hx] is off by +-20 % while the plant keeps
# its true values. "Flow" is both flows the model converts: the facility water through the open
# valve (fw_max_flow_lpm) and the coolant's mass flow (the measured L/min times coolant_density,
# so a density 20 % off is a mass flow 20 % off). Step 40 -> 150 kW announced 0.5 s ahead, as
# in the bench. Measured (peak supply deviation, PID alone 0.530 degC): exact model 0.195;
# single errors 0.170-0.240 (>= 55 % lower); all three wrong together 0.162-0.281, the worst
# (UA -20 %, water -20 %, coolant mass flow +20 %) 47 % lower. So the feedforward beats PID
# alone in every case; the bench's >= 50 % target holds for any one parameter 20 % off, not
# for the worst corner of all three.
STEP_BASE_KW, STEP_PEAK_KW, STEP_AT_S = 40.0, 150.0, 300.0
TRUE_HX = {"hx_ua_kw_per_k": 25.0, "fw_max_flow_lpm": 250.0, "coolant_density": 1025.0}


def _step_peak_c(announce: bool, hx: dict[str, float] | None = None) -> float:
    """Peak |supply - setpoint| over the 120 s after an announced (or not) heat step."""
    control = copy.deepcopy(CONTROL)
    if hx is not None:
        control["preparation"]["hx"] = hx
    rig = Rig(Step(STEP_BASE_KW, STEP_PEAK_KW, STEP_AT_S), control)
    rig.run(STEP_AT_S - 0.5)
    if announce:
        rig.block(ThermalPreparation).announce(HeatAnnouncement(
            STEP_PEAK_KW - STEP_BASE_KW, WALL0 + STEP_AT_S, 600.0, "step"))
    peak = 0.0

    def track() -> None:
        nonlocal peak
        peak = max(peak, abs(rig.plant.loop.supply_c - SP))

    rig.run(120.0, track)
    return peak


@pytest.fixture(scope="module")
def pid_alone_peak_c() -> float:
    return _step_peak_c(announce=False)


def _off(**factors: float) -> dict[str, float]:
    return {key: TRUE_HX[key] * factors.get(key, 1.0) for key in TRUE_HX}


@pytest.mark.parametrize("hx", [
    _off(hx_ua_kw_per_k=0.8), _off(hx_ua_kw_per_k=1.2),
    _off(fw_max_flow_lpm=0.8), _off(fw_max_flow_lpm=1.2),
    _off(coolant_density=0.8), _off(coolant_density=1.2),
], ids=["ua-20", "ua+20", "fw_flow-20", "fw_flow+20", "coolant_flow-20", "coolant_flow+20"])
def test_feedforward_with_one_model_parameter_20_percent_off_still_halves_the_peak(
        hx: dict[str, float], pid_alone_peak_c: float) -> None:
    assert pid_alone_peak_c > 0.5  # the step is one PID alone cannot hold within +-0.5 K
    assert _step_peak_c(announce=True, hx=hx) <= 0.5 * pid_alone_peak_c


@pytest.mark.parametrize("hx", [
    _off(hx_ua_kw_per_k=0.8, fw_max_flow_lpm=0.8, coolant_density=0.8),
    _off(hx_ua_kw_per_k=1.2, fw_max_flow_lpm=1.2, coolant_density=1.2),
    _off(hx_ua_kw_per_k=0.8, fw_max_flow_lpm=0.8, coolant_density=1.2),
    _off(hx_ua_kw_per_k=1.2, fw_max_flow_lpm=1.2, coolant_density=0.8),
], ids=["all-20", "all+20", "hx-20_coolant+20", "hx+20_coolant-20"])
def test_feedforward_with_every_model_parameter_20_percent_off_still_beats_pid_alone(
        hx: dict[str, float], pid_alone_peak_c: float) -> None:
    # The bound stated above: at least 40 % lower (the worst corner measures 47 %).
    assert _step_peak_c(announce=True, hx=hx) <= 0.6 * pid_alone_peak_c


def test_a_model_far_off_fails_the_check(pid_alone_peak_c: float) -> None:
    # The check can fail: with the heat exchanger believed five times worse than it is
    # (UA 5 kW/K), the feedforward over-opens the valve and no longer halves the peak (0.301).
    wrong = _step_peak_c(announce=True, hx=_off(hx_ua_kw_per_k=0.2))
    assert wrong > 0.5 * pid_alone_peak_c


# -- config ------------------------------------------------------------------------------------
def _load(control: dict[str, Any]) -> list[str]:
    rig = Rig(ConstantPower(10.0))
    errors = ErrorLog()
    load_cdu_control(control, "cdu.toml", errors, rig.image.inputs_info, rig.image.outputs_info)
    return errors.lines


@pytest.mark.parametrize(("patch", "line"), [
    ({"supply_temp": {"sensor": "nope.temperature"}},
     "cdu.toml: [control.supply_temp] sensor: unknown input 'nope.temperature'"),
    ({"supply_temp": {"setpoint_c": 60.0}},
     "cdu.toml: [control.supply_temp] setpoint_c: 60 degC outside 15..45 degC"),
    ({"supply_temp": {"mode": "Auto"}}, "cdu.toml: [control.supply_temp] mode: must be one of"),
    ({"supply_temp": {"kp": -2}}, "cdu.toml: [control.supply_temp] kp: must be > 0"),
    ({"supply_temp": {"valve": "flow"}}, "cdu.toml: [control.supply_temp] valve: 'flow' has no"),
    ({"supply_temp": {"kpp": 2}}, "cdu.toml: [control.supply_temp] kpp: unknown key"),
    ({"pumps": {"pumps": "pump1"}}, "cdu.toml: [control.pumps] pumps: required: a list"),
    ({"pumps": {"pumps": ["pump1", "pump9"]}}, "cdu.toml: [control.pumps] pumps: 'pump9' has no"),
    ({"pumps": {"control": "dp"}}, "cdu.toml: [control.pumps] dp_sensors: needs two known"),
    ({"pumps": {"stage_down_pct": 99.0}},
     "cdu.toml: [control.pumps] stage_down_pct: must be below stage_up_pct"),
    ({"pumps": {"low_flow_s": 2.0}}, "cdu.toml: [control.pumps] low_flow_s: must be <= 0.9"),
    ({"preparation": {"return_sensor": 5}},
     "cdu.toml: [control.preparation] return_sensor: must be a string"),
    ({"preparation": {"hx": {"valve_characteristic": "quick"}}},
     "cdu.toml: [control.preparation.hx] valve_characteristic: must be one of"),
])
def test_config_errors_name_file_section_and_key(patch: dict[str, Any], line: str) -> None:
    control = copy.deepcopy(CONTROL)
    for section, values in patch.items():
        control[section].update(values)
    lines = _load(control)
    assert any(x.startswith(line) for x in lines), lines


def test_valid_config_builds_the_blocks_in_scan_order() -> None:
    assert _load(CONTROL) == []
    rig = Rig(ConstantPower(10.0))
    assert [b.name for b in rig.blocks] == ["thermal_preparation", "pumps", "supply_temp"]
    assert [b.name for b in build_cdu_blocks(
        load_cdu_control(None, "x", ErrorLog(), [], []), EventLog(), wall=lambda: 0.0)] == []


def test_the_documented_control_section_loads_against_the_example_cdu() -> None:
    import tomllib

    from edge_runtime.assembly import load_node_config
    from edge_runtime.control import cdu_config
    from edge_runtime.safety.config import device_points

    doc = cdu_config.__doc__ or ""
    text = doc[doc.index("    [control]"):doc.index("Wiring")]
    data = tomllib.loads("\n".join(line[4:] for line in text.splitlines()))
    node = load_node_config(Path(__file__).resolve().parents[1] / "examples" / "cdu.toml")
    inputs, outputs, _ = device_points(node.devices)
    errors = ErrorLog()
    cfg = load_cdu_control(data["control"], "doc", errors, inputs, outputs)
    assert errors.lines == []
    assert cfg.supply_temp is not None and cfg.pumps is not None
    assert cfg.preparation is not None and cfg.preparation.design_delta_t_k == 8.0


def test_interlock_override_is_followed_and_released_bumplessly() -> None:
    rig = Rig(ConstantPower(80.0))
    rig.run(200.0)
    supply = rig.block(SupplyTemperatureControl)
    before = rig.image.output("valve.position_cmd")
    assert before < 90.0

    class Interlock:
        name = "interlock"
        active = True

        def step(self, image: Any, now: float, dt: float) -> None:
            if self.active:
                image.write("valve.position_cmd", 100.0)  # runs after the blocks

    lock = Interlock()
    rig.blocks.append(lock)
    rig.run(30.0)
    assert supply.loop.pid.output == pytest.approx(100.0, abs=1.0)  # it followed
    lock.active = False
    rig.run(0.1)
    assert rig.image.output("valve.position_cmd") == pytest.approx(100.0, abs=2.0)
    rig.run(400.0)
    assert rig.plant.loop.supply_c == pytest.approx(SP, abs=0.5)  # and regulates again


def test_blocks_run_inside_the_scan_engine() -> None:
    from edge_runtime.core.clock import VirtualClock
    from edge_runtime.core.scan import ScanEngine
    from tests.fakes import FakeDevice

    rig = Rig(ConstantPower(100.0))
    drivers = {d.name: FakeDevice(d, rig.bridge.live) for d in rig.bridge.devices}
    engine = ScanEngine(clock=VirtualClock(), period_s=DT, image=rig.image, drivers=drivers,
                        blocks=rig.blocks, events=rig.events)
    for i in range(3000):
        engine.scan_once(i * DT)
        rig.bridge.exchange(DT)
    assert engine.stats.block_faults == 0
    assert rig.plant.loop.supply_c == pytest.approx(SP, abs=0.5)
    staged = drivers["valve"].staged[-1][1]
    assert staged["position_cmd"] == rig.image.output("valve.position_cmd")


def test_valve_feedback_that_lags_the_actuator_model_raises_an_alarm() -> None:
    from edge_runtime.control.valves import ValveChannel, ValveConfig
    from edge_runtime.core.points import Quality, Sample

    bridge = PlantImageBridge(Plant(PlantConfig(), power=ConstantPower(0.0)))
    image, live = bridge.image, bridge.live
    events = EventLog()
    valve = ValveChannel(ValveConfig("valve", travel_s=20.0, tolerance_pct=5.0, delay_s=5.0),
                         events)

    def scan(t: float, fb: float) -> bool:
        live["valve.position_fb"] = Sample(fb, Quality.GOOD, t)
        live["valve.status"] = Sample(0.0, Quality.GOOD, t)  # no fault bit: only the model
        image.latch()
        ok = valve.check(image, t, DT)
        valve.write(image, 80.0)
        return ok

    t = 0.0
    scan(t, 20.0)
    while valve.following:
        t += DT
        scan(t, 20.0)  # the stem does not move
        assert t < 10.0
    assert 5.0 < t < 8.0  # delay_s after the model left the tolerance band
    assert [e.code for e in events.recent()] == ["valve_feedback"]
    scan(t + DT, 32.0)  # it moves again
    assert valve.following
    assert events.recent()[-1].code == "valve_feedback_ok"
