"""The plant model in stepped time: hydraulics, heat, delays, battery and faults."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.config.iomap import default_io_maps_dir, load_io_map
from edge_runtime.config.reader import ErrorLog
from edge_runtime.config.schema import IoMap
from pswd_plant_sim.battery import FOLLOWING, IDLE, REVERTED, Battery, BatteryConfig
from pswd_plant_sim.faults import FaultKind, FaultSpec
from pswd_plant_sim.loop import PUMP_FAULT_FAILURE, CoolantLoop, LoopConfig, valve_fraction
from pswd_plant_sim.model import Plant, PlantConfig
from pswd_plant_sim.rig import DeviceSpec, Rig
from pswd_plant_sim.trace import ConstantPower, TraceConfig


def _settle(loop: CoolantLoop, seconds: float, it_kw: float = 0.0, dt: float = 0.5) -> None:
    for _ in range(int(seconds / dt)):
        loop.step(dt, it_kw)


def _run_pumps(loop: CoolantLoop, *speeds: float) -> None:
    for pump, speed in zip(loop.pumps, speeds, strict=False):
        pump.command(run=speed > 0, speed_ref_pct=speed)
    _settle(loop, 10.0)  # past the VFD ramp


def _plant(it_kw: float, **loop: float | int | str) -> Plant:
    return Plant(PlantConfig(loop=LoopConfig(**loop)), power=ConstantPower(it_kw))  # type: ignore[arg-type]


def _steady(plant: Plant, speed: float, valve: float, seconds: float = 1500.0) -> Plant:
    plant.loop.pump(1).command(run=True, speed_ref_pct=speed)
    plant.loop.valve.cmd_pct = valve
    for _ in range(int(seconds / 0.5)):
        plant.step(0.5)
    return plant


# -- hydraulics -------------------------------------------------------------------------------
def test_affinity_laws_on_a_quadratic_system() -> None:
    loop = CoolantLoop(LoopConfig(pumps=1))
    points = {}
    for speed in (50.0, 75.0, 100.0):
        _run_pumps(loop, speed)
        p = loop.pumps[0]
        points[speed] = (loop.flow_lpm, loop.head_bar, p.shaft_kw)
    q1, h1, p1 = points[100.0]
    for speed, (q, h, pw) in points.items():
        s = speed / 100.0
        assert q / q1 == pytest.approx(s, rel=1e-3)  # flow ~ speed
        assert h / h1 == pytest.approx(s**2, rel=1e-3)  # head ~ speed^2
        assert pw / p1 == pytest.approx(s**3, rel=1e-3)  # power ~ speed^3


def test_more_speed_more_flow_and_parallel_pumps_add_less_than_double() -> None:
    loop = CoolantLoop(LoopConfig(pumps=2))
    flows = []
    for speed in (30.0, 50.0, 70.0, 90.0):
        _run_pumps(loop, speed)
        flows.append(loop.flow_lpm)
    assert flows == sorted(flows) and len(set(flows)) == 4
    _run_pumps(loop, 90.0, 0.0)
    one = loop.flow_lpm
    _run_pumps(loop, 90.0, 90.0)
    two = loop.flow_lpm
    assert one < two < 2 * one
    assert loop.pumps[0].flow_lpm == pytest.approx(loop.pumps[1].flow_lpm)
    # lead at 90 %, lag at a speed too low to beat the head: its check valve stays shut
    _run_pumps(loop, 90.0, 20.0)
    assert loop.pumps[1].flow_lpm == 0.0 and loop.pumps[1].running


def test_vfd_ramp_limit_and_run_hours() -> None:
    cfg = LoopConfig(pumps=1, pump_ramp_pct_per_s=20.0)
    loop = CoolantLoop(cfg)
    loop.pumps[0].command(run=True, speed_ref_pct=100.0)
    loop.step(1.0, 0.0)
    assert loop.pumps[0].speed_pct == pytest.approx(20.0)
    _settle(loop, 3600.0, dt=5.0)
    assert loop.pumps[0].run_hours == pytest.approx(1.0 + 1 / 3600, rel=1e-3)


def test_valve_characteristics_and_travel_time() -> None:
    assert valve_fraction(0.0, "equal_percentage", 50.0) == 0.0
    assert valve_fraction(100.0, "equal_percentage", 50.0) == pytest.approx(1.0)
    assert valve_fraction(50.0, "equal_percentage", 50.0) < valve_fraction(50.0, "linear", 50)
    assert valve_fraction(50.0, "linear", 50.0) == pytest.approx(0.5)
    loop = CoolantLoop(LoopConfig(valve_travel_s=20.0, initial_valve_pct=0.0))
    loop.valve.cmd_pct = 100.0
    _settle(loop, 10.0, dt=0.1)
    assert loop.valve.position_pct == pytest.approx(50.0, abs=0.1)
    assert loop.valve.moving


# -- heat -------------------------------------------------------------------------------------
def test_energy_balance_at_steady_state() -> None:
    plant = _steady(_plant(120.0), speed=95.0, valve=85.0)
    s = plant.state
    assert s.hx_kw == pytest.approx(120.0, rel=0.01)
    loop = plant.loop
    fw_kw = s.fw_flow_lpm / 60_000 * 998.0 * 4186.0 / 1000 * (s.fw_return_c - loop.config.fw_temp_c)
    assert fw_kw == pytest.approx(120.0, rel=0.01)
    cp = loop.config.coolant_cp * loop.config.coolant_density / 1000
    coolant_kw = s.flow_lpm / 60_000 * cp * (s.return_c - s.supply_c)
    assert coolant_kw == pytest.approx(120.0, rel=0.01)
    assert 150.0 <= s.flow_lpm <= 250.0
    assert 25.0 <= s.supply_c <= 35.0


def test_opening_the_valve_lowers_the_supply_temperature() -> None:
    supplies = [_steady(_plant(120.0), 95.0, valve).state.supply_c for valve in (60, 80, 100)]
    assert supplies[0] > supplies[1] > supplies[2]


def test_transport_delay_between_it_load_and_return_sensor() -> None:
    plant = _steady(_plant(60.0, return_pipe_l=30.0), speed=95.0, valve=85.0, seconds=1200)
    before = plant.state
    delay = 30.0 / (before.flow_lpm / 60.0)  # pipe volume / flow
    assert 5.0 < delay < 15.0
    plant.power = ConstantPower(120.0)
    dt = 0.1
    for _ in range(int(0.6 * delay / dt)):
        plant.step(dt)
    mid = plant.state
    assert mid.rack_outlet_c > before.rack_outlet_c + 1.0  # the rack feels it at once
    assert mid.return_c == pytest.approx(before.return_c, abs=0.01)  # the sensor not yet
    for _ in range(int(delay / dt)):  # now the sensor shows what the rack saw at 0.6 delay
        plant.step(dt)
    assert plant.state.return_c > before.return_c + 1.0


def test_grid_power_is_it_minus_battery_discharge() -> None:
    plant = Plant(PlantConfig(trace=TraceConfig(seed=2, rack_kw=120.0)))
    bat = plant.battery
    for i in range(50):
        bat.command(enable=True, setpoint_kw=40.0, ctrl_hb=i)
        plant.step(0.1)
    s = plant.state
    assert s.battery_ac_kw == pytest.approx(40.0)
    assert s.grid_kw == pytest.approx(s.it_power_kw - 40.0)
    assert s.it_power_kw == pytest.approx(plant.power.power_at(s.t))


# -- battery ----------------------------------------------------------------------------------
def _drive(bat: Battery, setpoint: float, seconds: float, dt: float = 1.0,
           enable: bool = True) -> None:
    for _ in range(int(seconds / dt)):
        bat.command(enable=enable, setpoint_kw=setpoint, ctrl_hb=bat.hb + 1)
        bat.step(dt)


def test_battery_power_limits_and_enable() -> None:
    bat = Battery(BatteryConfig(max_discharge_kw=150.0, max_charge_kw=100.0))
    _drive(bat, 400.0, 5.0)
    assert bat.ac_kw == pytest.approx(150.0)
    _drive(bat, -400.0, 5.0)
    assert bat.ac_kw == pytest.approx(-100.0)
    _drive(bat, 50.0, 5.0, enable=False)
    assert bat.ac_kw == 0.0 and bat.state == IDLE


def test_battery_soc_stays_within_bounds() -> None:
    cfg = BatteryConfig(capacity_kwh=10.0, soc_min_pct=5.0, soc_max_pct=95.0)
    bat = Battery(cfg)
    _drive(bat, 150.0, 600.0)
    assert bat.soc_pct == pytest.approx(5.0)
    assert bat.ac_kw == 0.0 and bat.discharge_limit_kw == 0.0
    _drive(bat, -100.0, 900.0)
    assert bat.soc_pct == pytest.approx(95.0)
    assert bat.ac_kw == 0.0 and bat.charge_limit_kw == 0.0


def test_battery_round_trip_efficiency() -> None:
    bat = Battery(BatteryConfig(capacity_kwh=100.0, efficiency=0.9, initial_soc_pct=80.0))
    out_kwh = 0.0
    for _ in range(1800):  # 30 min at 60 kW
        bat.command(enable=True, setpoint_kw=60.0, ctrl_hb=bat.hb + 1)
        bat.step(1.0)
        out_kwh += bat.ac_kw / 3600
    low = bat.soc_pct
    in_kwh = 0.0
    while bat.soc_pct < 80.0 - 1e-9:
        bat.command(enable=True, setpoint_kw=-30.0, ctrl_hb=bat.hb + 1)
        bat.step(1.0)
        in_kwh -= bat.ac_kw / 3600
    assert low < 60.0
    assert out_kwh / in_kwh == pytest.approx(0.9, abs=0.005)


def test_battery_ramp_limit() -> None:
    bat = Battery(BatteryConfig(ramp_kw_per_s=100.0))
    _drive(bat, 150.0, 0.5, dt=0.1)
    assert bat.ac_kw == pytest.approx(50.0)
    _drive(bat, 150.0, 1.0, dt=0.1)
    assert bat.ac_kw == pytest.approx(150.0)


def test_battery_heartbeat_reversion() -> None:
    bat = Battery(BatteryConfig(hb_timeout_s=2.0, ramp_kw_per_s=1000.0))
    for i in range(30):
        bat.command(enable=True, setpoint_kw=80.0, ctrl_hb=i)
        bat.step(0.1)
    assert bat.state == FOLLOWING and bat.ac_kw == pytest.approx(80.0)
    for _ in range(19):  # heartbeat frozen at 29 for 1.9 s: still following
        bat.command(enable=True, setpoint_kw=80.0, ctrl_hb=29)
        bat.step(0.1)
    assert bat.state == FOLLOWING
    for _ in range(3):  # past 2 s: safe state, 0 kW
        bat.command(enable=True, setpoint_kw=80.0, ctrl_hb=29)
        bat.step(0.1)
    assert bat.state == REVERTED and bat.ac_kw == 0.0
    own = bat.hb
    bat.command(enable=True, setpoint_kw=80.0, ctrl_hb=30)  # the controller is back
    bat.step(1.0)
    assert bat.state == FOLLOWING and bat.ac_kw == pytest.approx(80.0)
    assert bat.hb == own + 1  # the inverter's own heartbeat counts seconds


# -- devices and faults (register level, no network) -------------------------------------------
@pytest.fixture(scope="module")
def maps() -> dict[str, IoMap]:
    errors = ErrorLog()
    out: dict[str, IoMap] = {}
    for path in sorted(Path(default_io_maps_dir()).glob("*.toml")):
        m = load_io_map(path, errors)
        if m is not None:
            out[m.model] = m
    assert not errors.lines
    return out


def _rig(maps: dict[str, IoMap], it_kw: float = 120.0) -> Rig:
    plant = Plant(power=ConstantPower(it_kw))
    specs = [
        DeviceSpec("pump1", maps["cdu_pump_vfd"], "cdu", 1, "pump1"),
        DeviceSpec("pump2", maps["cdu_pump_vfd"], "cdu", 2, "pump2"),
        DeviceSpec("valve", maps["control_valve"], "cdu", 3, "valve"),
        DeviceSpec("supply_temp", maps["temperature_transmitter"], "cdu", 4, "supply_temp"),
        DeviceSpec("return_temp", maps["temperature_transmitter"], "cdu", 5, "return_temp"),
        DeviceSpec("flow", maps["flow_meter"], "cdu", 6, "flow"),
        DeviceSpec("leak", maps["leak_detector"], "cdu", 9, "leak"),
        DeviceSpec("battery", maps["battery_inverter"], "rack", 2, "battery"),
    ]
    return Rig(plant, specs)


def _write(rig: Rig, device: str, point: str, value: float) -> None:
    from edge_runtime.config.codec import encode

    bank = rig.units[device].bank
    p = bank.point(point)
    assert bank.write(p.address, encode(value, p.encoding), rig.t) is None


def _run(rig: Rig, seconds: float, dt: float = 0.1) -> None:
    for _ in range(round(seconds / dt)):
        rig.step(dt)


def test_outputs_start_at_failsafe_and_revert_after_max_hold(maps: dict[str, IoMap]) -> None:
    rig = _rig(maps)
    bank = rig.units["pump1"].bank
    assert bank.get("speed_ref") == 100.0 and bank.get("control_word") == 1
    _write(rig, "pump1", "speed_ref", 40.0)
    _run(rig, 1.5)
    assert bank.get("speed_ref") == 40.0 and "speed_ref" not in bank.failsafe_active
    _run(rig, 1.0)  # 2.5 s since the write > max_hold_s = 2
    assert bank.get("speed_ref") == 100.0 and "speed_ref" in bank.failsafe_active


def test_stuck_and_drifting_sensors(maps: dict[str, IoMap]) -> None:
    rig = _rig(maps)
    _run(rig, 5.0)
    rig.inject(FaultSpec("return_temp", FaultKind.STUCK))
    rig.inject(FaultSpec("supply_temp", FaultKind.DRIFT, rate_per_s=0.5))
    frozen = rig.units["return_temp"].bank.get("temperature")
    _run(rig, 20.0)
    s = rig.plant.state
    assert abs(s.return_c - frozen) > 0.5  # the plant moved on ...
    assert rig.units["return_temp"].bank.get("temperature") == frozen  # ... the sensor did not
    assert rig.units["supply_temp"].bank.get("temperature") == pytest.approx(
        s.supply_c + 0.5 * 20.0, abs=0.02)
    assert rig.clear("supply_temp") == 1
    rig.step(0.1)
    assert rig.units["supply_temp"].bank.get("temperature") == pytest.approx(
        rig.plant.state.supply_c, abs=0.01)


def test_pump_failure_trips_and_needs_a_reset(maps: dict[str, IoMap]) -> None:
    rig = _rig(maps)
    _run(rig, 8.0)
    flow_two = rig.plant.state.flow_lpm
    rig.inject(FaultSpec("pump2", FaultKind.PUMP_FAILURE))
    rig.step(0.1)
    bank = rig.units["pump2"].bank
    assert int(bank.get("status_word")) & 0b010  # fault
    assert not int(bank.get("status_word")) & 0b100  # not ready
    assert bank.get("speed_actual") == 0.0 and bank.get("fault_code") == PUMP_FAULT_FAILURE
    assert rig.plant.state.flow_lpm < 0.85 * flow_two  # one pump left of two
    rig.clear("pump2", FaultKind.PUMP_FAILURE)
    rig.step(0.1)
    assert int(bank.get("status_word")) & 0b010  # latched until reset
    _write(rig, "pump2", "control_word", 3)  # run + fault reset
    rig.step(0.1)
    _write(rig, "pump2", "control_word", 1)
    _run(rig, 6.0)
    assert int(bank.get("status_word")) == 0b101  # running, ready
    assert rig.plant.state.flow_lpm == pytest.approx(flow_two, rel=0.01)


def test_leak_and_valve_faults(maps: dict[str, IoMap]) -> None:
    rig = _rig(maps)
    rig.inject(FaultSpec("leak", FaultKind.LEAK, position_m=12.3))
    rig.step(0.1)
    leak = rig.units["leak"].bank
    assert leak.get("leak_state") == 1 and leak.get("leak_position_m") == pytest.approx(12.3)
    assert rig.plant.state.leak_state == 1
    rig.clear("leak")
    rig.step(0.1)
    assert leak.get("leak_state") == 0
    _write(rig, "valve", "position_cmd", 20.0)
    _run(rig, 1.0)
    rig.inject(FaultSpec("valve", FaultKind.VALVE_STUCK))
    _write(rig, "valve", "position_cmd", 90.0)
    _run(rig, 1.0)
    valve = rig.units["valve"].bank
    assert int(valve.get("status")) & 0b10
    assert valve.get("position_fb") == pytest.approx(100.0 - 5.0, abs=0.1)  # 1 s at 5 %/s


def test_scheduled_faults_start_and_end_on_time(maps: dict[str, IoMap]) -> None:
    rig = _rig(maps)
    rig._scheduled = [FaultSpec("flow", FaultKind.OFFLINE, at_s=1.0, duration_s=2.0)]
    _run(rig, 0.9)
    assert rig.units["flow"].offline is None
    _run(rig, 0.2)
    assert rig.units["flow"].offline == "exception"
    _run(rig, 2.0)
    assert rig.units["flow"].offline is None


def test_faults_that_cannot_apply_are_refused(maps: dict[str, IoMap]) -> None:
    rig = _rig(maps)
    with pytest.raises(ValueError, match="pump_failure applies to cdu_pump_vfd"):
        rig.inject(FaultSpec("flow", FaultKind.PUMP_FAILURE))
    with pytest.raises(ValueError, match="no point"):
        rig.inject(FaultSpec("flow", FaultKind.STUCK, point="nope"))
    with pytest.raises(ValueError, match="no device"):
        rig.inject(FaultSpec("ghost", FaultKind.OFFLINE))


def test_battery_registers_follow_writes_and_heartbeat(maps: dict[str, IoMap]) -> None:
    rig = _rig(maps, it_kw=100.0)
    bank = rig.units["battery"].bank
    assert bank.get("sunspec_marker_hi") == 0x5375 and bank.get("sunspec_marker_lo") == 0x6E53
    assert bank.get("m802_id") == 802 and bank.get("soc_sf") == -1
    for i in range(1, 11):
        _write(rig, "battery", "ctrl_hb", i)
        _write(rig, "battery", "w_set_ena", 1)
        _write(rig, "battery", "w_set_kw", 30.0)
        rig.step(0.1)
    assert bank.get("ac_w_kw") == pytest.approx(30.0)
    assert bank.get("state") == 3
    assert rig.plant.state.grid_kw == pytest.approx(70.0)
    for _ in range(25):  # heartbeat frozen: after hb_timeout_s the inverter reverts
        _write(rig, "battery", "ctrl_hb", 10)
        _write(rig, "battery", "w_set_ena", 1)
        _write(rig, "battery", "w_set_kw", 30.0)
        rig.step(0.1)
    assert bank.get("state") == 4 and bank.get("evt1") == 1
    assert bank.get("ac_w_kw") == 0.0
