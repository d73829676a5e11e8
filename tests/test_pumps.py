"""Pump staging (lead/lag, rotation by run hours, N+1) and flow control against the plant."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from edge_runtime.config.reader import ErrorLog
from edge_runtime.control.cdu_config import build_cdu_blocks, load_cdu_control
from edge_runtime.control.pumps import PumpControl, PumpStaging, PumpView, StagingConfig
from edge_runtime.core.events import EventLog
from pswd_plant_sim.image_bridge import PlantImageBridge
from pswd_plant_sim.loop import LoopConfig
from pswd_plant_sim.model import Plant, PlantConfig
from pswd_plant_sim.trace import ConstantPower

pytestmark = pytest.mark.timeout(30)
DT = 0.1


def view(name: str, *, hours: float = 0.0, running: bool = True, fault: int = 0,
         known: bool = True) -> PumpView:
    return PumpView(name, known, running and not fault, bool(fault), fault, hours)


def views(**kw: PumpView) -> dict[str, PumpView]:
    return kw


def staging(**kw: object) -> tuple[PumpStaging, EventLog]:
    events = EventLog()
    cfg = StagingConfig(pumps=("pump1", "pump2"), **kw)  # type: ignore[arg-type]
    return PumpStaging(cfg, events), events


def test_lead_is_the_pump_with_fewest_run_hours() -> None:
    st, _ = staging()
    st.step(views(pump1=view("pump1", hours=500, running=False),
                  pump2=view("pump2", hours=100, running=False)), 50.0, None, 0.0)
    assert st.running == ["pump2"]
    assert st.control_words() == {"pump1": 0, "pump2": 1}


def test_lead_fault_starts_the_standby_in_the_same_scan() -> None:
    st, events = staging()
    ok = views(pump1=view("pump1"), pump2=view("pump2", hours=10, running=False))
    st.step(ok, 50.0, 150.0, 0.0)
    assert st.running == ["pump1"]
    st.step(views(pump1=view("pump1", fault=16), pump2=view("pump2", hours=10,
                                                              running=False)), 50.0, 150.0, 0.1)
    assert st.running == ["pump2"]
    assert st.control_words() == {"pump1": 0, "pump2": 1}
    codes = [e.code for e in events.recent()]
    assert "pump_fault" in codes and "pump_start" in codes


def test_low_flow_with_a_pump_running_starts_the_standby_within_one_second() -> None:
    st, events = staging(low_flow_lpm=50.0, low_flow_s=0.5, start_grace_s=3.0)
    v = views(pump1=view("pump1"), pump2=view("pump2", hours=10, running=False))
    t = 0.0
    while t < 5.0:  # healthy flow after the start
        st.step(v, 50.0, 150.0, t)
        t += DT
    started_low = t
    while "pump2" not in st.running:
        st.step(v, 50.0, 10.0, t)
        t += DT
        assert t - started_low < 1.0, "standby not started within 1 s of low flow"
    assert st.failover_latched
    assert any(e.code == "pump_start" and "low flow" in e.message for e in events.recent())


def test_a_starting_pump_is_not_low_flow() -> None:
    st, _ = staging(low_flow_lpm=50.0, low_flow_s=0.5, start_grace_s=3.0)
    v = views(pump1=view("pump1"), pump2=view("pump2", hours=10, running=False))
    for i in range(25):  # 2.5 s of ramp-up at low flow
        st.step(v, 50.0, 5.0, i * DT)
    assert st.running == ["pump1"]


def test_rotation_by_run_hours_is_make_before_break() -> None:
    st, _ = staging(rotate_hours=24.0, changeover_s=5.0)
    st.step(views(pump1=view("pump1", hours=100), pump2=view("pump2", hours=110,
                                                               running=False)), 50.0, None, 0.0)
    assert st.running == ["pump1"]
    worn = views(pump1=view("pump1", hours=134.5), pump2=view("pump2", hours=110,
                                                                running=False))
    st.step(worn, 50.0, None, 10.0)
    assert st.running == ["pump2"]
    assert st.control_words() == {"pump1": 1, "pump2": 1}  # overlap: both run
    st.step(worn, 50.0, None, 14.9)
    assert st.control_words()["pump1"] == 1
    st.step(worn, 50.0, None, 15.1)
    assert st.control_words() == {"pump1": 0, "pump2": 1}


def test_staging_up_and_down_on_demand() -> None:
    st, _ = staging(stage_up_pct=95.0, stage_up_s=2.0, stage_down_pct=40.0, stage_down_s=3.0)
    v = views(pump1=view("pump1"), pump2=view("pump2", hours=5, running=False))
    for i in range(31):
        st.step(v, 99.0, None, i * DT)
    assert st.running == ["pump1", "pump2"]
    for i in range(31, 70):
        st.step(v, 30.0, None, i * DT)
    assert st.running == ["pump1"]


def test_no_standby_raises_one_alarm() -> None:
    st, events = staging()
    bad = views(pump1=view("pump1", fault=3), pump2=view("pump2", fault=4))
    for i in range(5):
        st.step(bad, 50.0, None, i * DT)
    assert st.running == []
    assert [e.code for e in events.recent()].count("no_standby") == 1


def test_fault_reset_is_a_one_scan_pulse() -> None:
    st, _ = staging()
    v = views(pump1=view("pump1"), pump2=view("pump2", fault=16))
    st.step(v, 50.0, None, 0.0)
    assert st.reset_faults(v) == ["pump2"]
    assert st.control_words()["pump2"] == 2
    assert st.control_words()["pump2"] == 0


# -- against the plant model --------------------------------------------------------------------
CONTROL = {"pumps": {"pumps": ["pump1", "pump2"], "control": "flow", "flow_sensor": "flow.flow",
                     "setpoint": 160.0, "kp": 0.4, "ti_s": 1.0, "low_flow_lpm": 60.0,
                     "rate_limit_pct_per_s": 20.0}}


def _rig(control: Mapping[str, Any]) -> tuple[Plant, PlantImageBridge, list[object], EventLog]:
    plant = Plant(PlantConfig(loop=LoopConfig(initial_temp_c=30.0)), power=ConstantPower(60.0))
    bridge = PlantImageBridge(plant)
    errors = ErrorLog()
    cfg = load_cdu_control(control, "test.toml", errors, bridge.image.inputs_info,
                           bridge.image.outputs_info)
    assert not errors.lines, errors.lines
    events = EventLog()
    return plant, bridge, list(build_cdu_blocks(cfg, events, wall=lambda: plant.t)), events


def _run(bridge: PlantImageBridge, blocks: list[object], start: float, seconds: float) -> float:
    t = start
    for _ in range(round(seconds / DT)):
        bridge.image.latch()
        for b in blocks:
            b.step(bridge.image, t, DT)  # type: ignore[attr-defined]
        bridge.exchange(DT)
        t += DT
    return t


def test_flow_held_within_one_percent_in_steady_state() -> None:
    plant, bridge, blocks, _ = _rig(CONTROL)
    t = _run(bridge, blocks, 0.0, 30.0)
    flows = []
    for _ in range(100):
        t = _run(bridge, blocks, t, 0.1)
        flows.append(plant.loop.flow_lpm)
    assert max(abs(f - 160.0) for f in flows) <= 1.6  # +-1 % (spec 9.1.1 a)


def test_lead_pump_failure_on_the_plant_starts_the_standby_within_one_second() -> None:
    plant, bridge, blocks, events = _rig(CONTROL)
    pumps = blocks[0]
    assert isinstance(pumps, PumpControl)
    t = _run(bridge, blocks, 0.0, 30.0)
    lead = pumps.staging.running[0]
    standby = "pump2" if lead == "pump1" else "pump1"
    plant.loop.pump(int(lead[-1])).fail()
    failed_at = t
    while bridge.image.output(f"{standby}.control_word") != 1:
        t = _run(bridge, blocks, t, DT)
        assert t - failed_at <= 1.0
    t = _run(bridge, blocks, t, 20.0)
    assert plant.loop.flow_lpm == pytest.approx(160.0, rel=0.01)
    assert any(e.code == "pump_fault" for e in events.recent(50))


def test_dp_control_holds_the_differential_pressure() -> None:
    control = {"pumps": {"pumps": ["pump1", "pump2"], "control": "dp",
                         "dp_sensors": ["supply_pressure.pressure", "return_pressure.pressure"],
                         "flow_sensor": "flow.flow", "setpoint": 0.8, "kp": 20.0,
                         "ti_s": 2.0}}
    plant, bridge, blocks, _ = _rig(control)
    _run(bridge, blocks, 0.0, 40.0)
    dp = plant.loop.supply_pressure_bar - plant.loop.return_pressure_bar
    assert dp == pytest.approx(0.8, rel=0.01)


def test_manual_speed_and_back_to_automatic() -> None:
    plant, bridge, blocks, _ = _rig(CONTROL)
    pumps = blocks[0]
    assert isinstance(pumps, PumpControl)
    t = _run(bridge, blocks, 0.0, 20.0)
    pumps.set_mode("Manual", 50.0)
    t = _run(bridge, blocks, t, 10.0)
    assert bridge.image.output("pump1.speed_ref") == 50.0
    assert plant.loop.flow_lpm < 140.0
    with pytest.raises(ValueError, match="outside"):
        pumps.set_mode("Override", 99999.0)
    pumps.set_mode("Override", 120.0)
    _run(bridge, blocks, t, 20.0)
    assert plant.loop.flow_lpm == pytest.approx(120.0, rel=0.01)


def test_fault_reset_command_on_the_plant_returns_the_pump_to_standby() -> None:
    plant, bridge, blocks, events = _rig(CONTROL)
    pumps = blocks[0]
    assert isinstance(pumps, PumpControl)
    t = _run(bridge, blocks, 0.0, 20.0)
    lead = pumps.staging.running[0]
    plant.loop.pump(int(lead[-1])).fail()
    t = _run(bridge, blocks, t, 2.0)
    plant.loop.pump(int(lead[-1])).repair()  # cause removed, fault still latched
    assert plant.loop.pump(int(lead[-1])).fault_latched
    pumps.reset_faults()
    _run(bridge, blocks, t, 1.0)
    assert not plant.loop.pump(int(lead[-1])).fault_latched
    assert lead not in pumps.staging.running  # back as the standby, not restarted
    assert any(e.code == "pump_fault_reset" for e in events.recent(50))
