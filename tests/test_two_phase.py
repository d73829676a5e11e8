"""Two-phase loop: refrigerant tables against published points, saturation state and quality,
pressure and quality regulation in closed loop with the two-phase truth model, alarms, config."""

from __future__ import annotations

import pytest

from edge_runtime.config.reader import ErrorLog, Section
from edge_runtime.control.refrigerants import FLUIDS, OutOfTable, table
from edge_runtime.control.two_phase import (
    SUBCOOLED,
    SUPERHEATED,
    TWO_PHASE,
    TwoPhaseConfig,
    TwoPhasePoints,
    build_two_phase_block,
    load_two_phase,
    saturation_state,
)
from edge_runtime.core.events import EventLog
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality, Sample
from edge_runtime.core.ports import InputTable
from pswd_plant_sim.two_phase_loop import TwoPhaseLoop, TwoPhaseLoopConfig
from tests.fakes import shipped_image

pytestmark = pytest.mark.timeout(30)


# -- property tables --------------------------------------------------------------------------
@pytest.mark.parametrize(("t_c", "p_kpa", "h_lv", "rho_l", "rho_v"), [
    (0.0, 216.5, 184.2, 1240.1, 11.71),
    (25.0, 498.5, 166.9, 1163.2, 26.32),
    (40.0, 766.4, 154.8, 1111.6, 40.63),
    (60.0, 1276.4, 135.5, 1032.5, 70.07),
])
def test_r1234ze_table_values(t_c: float, p_kpa: float, h_lv: float, rho_l: float,
                              rho_v: float) -> None:
    tab = table("R1234ze(E)")
    assert tab.p_sat_kpa(t_c) == pytest.approx(p_kpa, rel=5e-4)
    assert tab.t_sat_c(p_kpa) == pytest.approx(t_c, abs=0.02)
    assert tab.h_lv_at(t_c) == pytest.approx(h_lv, rel=2e-3)
    assert tab.rho_l_at(t_c) == pytest.approx(rho_l, rel=1e-3)
    assert tab.rho_v_at(t_c) == pytest.approx(rho_v, rel=2e-3)


def test_r1234ze_normal_boiling_point_matches_refprop() -> None:
    # NIST REFPROP R1234ZEE.FLD: normal boiling point 254.177 K (an independent number)
    assert table("R1234ze(E)").t_sat_c(101.325) == pytest.approx(254.177 - 273.15, abs=0.02)


def test_r1233zd_normal_boiling_point() -> None:
    # Mondejar et al. 2015 / REFPROP: normal boiling point 291.41 K
    assert table("R1233zd(E)").t_sat_c(101.325) == pytest.approx(291.41 - 273.15, abs=0.05)


@pytest.mark.parametrize("name", list(FLUIDS))
@pytest.mark.parametrize("t_c", [-10.0, 20.0, 50.0, 80.0])
def test_latent_heat_agrees_with_clapeyron(name: str, t_c: float) -> None:
    """h_lv = T (v_v - v_l) dp/dT: three separately fitted correlations must agree."""
    f = FLUIDS[name]
    t = t_c + 273.15
    dpdt = (f.p_sat_pa(t + 0.01) - f.p_sat_pa(t - 0.01)) / 0.02
    clapeyron = dpdt * t * (1 / f.rho_v_kg_m3(t) - 1 / f.rho_l_kg_m3(t))
    # CoolProp's h_lv fits deviate by up to 0.5 J/g (R1234ze(E)) and 5.6 J/g (R1233zd(E))
    assert f.h_lv_j_kg(t) == pytest.approx(clapeyron, rel=5e-3 if name == "R1234ze(E)" else 1e-2)


def test_table_refuses_values_outside_its_range() -> None:
    tab = table("R1234ze(E)")
    with pytest.raises(OutOfTable, match="kPa outside"):
        tab.t_sat_c(5000.0)
    with pytest.raises(OutOfTable):
        tab.t_sat_c(float("nan"))
    with pytest.raises(KeyError, match="known: R1234ze"):
        table("R22")


# -- saturation state -----------------------------------------------------------------------------
def test_saturation_state_quality_and_phase() -> None:
    tab = table("R1234ze(E)")
    p = tab.p_sat_kpa(30.0)
    m = tab.rho_l_at(27.0) * 30.0 / 60_000.0  # 30 L/min of liquid at 27 degC
    heat = m * (tab.cp_l_at(27.0) * 3.0 + 0.4 * tab.h_lv_at(30.0))  # exactly x = 0.4
    s = saturation_state(tab, p, 27.0, 30.0, 30.0, heat, 0.5)
    assert s.t_sat_c == pytest.approx(30.0, abs=0.01)
    assert s.quality == pytest.approx(0.4, abs=0.005)
    assert s.phase == TWO_PHASE and s.subcooling_k == pytest.approx(3.0, abs=0.01)
    assert saturation_state(tab, p, 27.0, 28.0, 30.0, 1.0, 0.5).phase == SUBCOOLED
    assert saturation_state(tab, p, 27.0, 36.0, 30.0, heat, 0.5).phase == SUPERHEATED


# -- closed loop ----------------------------------------------------------------------------------
DEVICES = {"loop_pressure": "pressure_transmitter", "evap_in_temp": "temperature_transmitter",
           "evap_out_temp": "temperature_transmitter", "liquid_flow": "flow_meter",
           "rack_meter": "rack_power_meter", "condenser_valve": "control_valve",
           "refrigerant_pump": "cdu_pump_vfd"}


def _image() -> tuple[ProcessImage, InputTable]:
    return shipped_image(DEVICES)


class Rig:
    """Controller block + truth model, stepped at 100 ms."""

    def __init__(self, config: TwoPhaseConfig, plant: TwoPhaseLoopConfig | None = None) -> None:
        self.image, self.live = _image()
        self.events = EventLog()
        self.block = build_two_phase_block(config, events=self.events)
        self.plant = TwoPhaseLoop(plant)
        self.t = 0.0
        self.pump_pct = 60.0

    def run(self, seconds: float, heat_kw: float, *, pressure_bad: bool = False) -> None:
        for _ in range(round(seconds / 0.1)):
            r = self.plant.read()
            g = Quality.GOOD
            self.live["loop_pressure.pressure"] = (Sample.bad("comms lost", self.t)
                                                   if pressure_bad
                                                   else Sample(r.pressure_bar, g, self.t))
            self.live["evap_in_temp.temperature"] = Sample(r.inlet_c, g, self.t)
            self.live["evap_out_temp.temperature"] = Sample(r.outlet_c, g, self.t)
            self.live["liquid_flow.flow"] = Sample(r.flow_lpm, g, self.t)
            self.live["rack_meter.power_kw"] = Sample(heat_kw, g, self.t)
            self.image.latch()
            self.block.step(self.image, self.t, 0.1)
            if self.block.config.points.pump:
                self.pump_pct = self.image.output(self.block.config.points.pump)
            self.plant.step(0.1, heat_kw=heat_kw,
                            valve_pct=self.image.output("condenser_valve.position_cmd"),
                            pump_pct=self.pump_pct)
            self.t += 0.1

    def codes(self) -> list[str]:
        return [e.code for e in self.events.recent(50)]


SETPOINT = 4.8  # bar gauge: about 30.5 degC saturation for R1234ze(E)


def test_pressure_is_regulated_and_quality_tracks_the_truth() -> None:
    rig = Rig(TwoPhaseConfig(pressure_setpoint_bar=SETPOINT))
    rig.run(300.0, 100.0)
    p = rig.plant.read().pressure_bar
    assert p == pytest.approx(SETPOINT, abs=0.03)
    s = rig.block.state
    assert s is not None and s.phase == TWO_PHASE
    assert s.quality == pytest.approx(rig.plant.quality, abs=0.02)
    assert rig.image.derived["two_phase.t_sat_c"].value == pytest.approx(rig.plant.t_sat_c,
                                                                         abs=0.05)
    # heat step +50 %: pressure stays inside the operating band and returns to setpoint
    lo = hi = p
    for _ in range(300):
        rig.run(1.0, 150.0)
        p = rig.plant.read().pressure_bar
        lo, hi = min(lo, p), max(hi, p)
    assert lo > 3.5 and hi < 7.0
    assert p == pytest.approx(SETPOINT, abs=0.03)
    assert rig.block.alarms == set()


def test_low_flow_raises_dryout_and_quality_control_prevents_it() -> None:
    rig = Rig(TwoPhaseConfig(pressure_setpoint_bar=SETPOINT))
    rig.pump_pct = 12.0  # 14 L/min: 150 kW boils it dry
    rig.run(200.0, 150.0)
    assert rig.block.state is not None and rig.block.state.phase == SUPERHEATED
    assert "dryout" in rig.block.alarms and "two_phase_dryout" in rig.codes()
    cfg = TwoPhaseConfig(pressure_setpoint_bar=SETPOINT, quality_target=0.5,
                         points=TwoPhasePoints(pump="refrigerant_pump.speed_ref"))
    rig2 = Rig(cfg)
    rig2.run(400.0, 150.0)
    assert rig2.plant.quality == pytest.approx(0.5, abs=0.05)
    assert "dryout" not in rig2.block.alarms


def test_bad_pressure_opens_the_condenser_and_recovers_bumpless() -> None:
    rig = Rig(TwoPhaseConfig(pressure_setpoint_bar=SETPOINT))
    rig.run(200.0, 100.0)
    rig.run(1.0, 100.0, pressure_bad=True)
    assert rig.image.output("condenser_valve.position_cmd") == 100.0
    assert "two_phase_pressure_bad" in rig.codes()
    rig.run(0.1, 100.0)
    assert rig.image.output("condenser_valve.position_cmd") > 90.0  # continues from 100 %
    assert "two_phase_pressure_bad_cleared" in rig.codes()


def test_high_high_pressure_drives_the_condenser_full() -> None:
    rig = Rig(TwoPhaseConfig(pressure_setpoint_bar=SETPOINT, pressure_max_bar=5.0,
                             pressure_high_high_bar=5.2),
              TwoPhaseLoopConfig(initial_t_sat_c=40.0))  # about 6.6 bar g
    rig.run(0.1, 100.0)
    assert rig.image.output("condenser_valve.position_cmd") == 100.0
    assert "pressure_high_high" in rig.block.alarms


# -- config ---------------------------------------------------------------------------------
def _load(data: dict[str, object]) -> tuple[TwoPhaseConfig, list[str]]:
    errors = ErrorLog()
    return load_two_phase(Section("cdu.toml", "two_phase", data, errors), "cdu.toml",
                          errors), errors.lines


def test_config_values_and_errors() -> None:
    cfg, lines = _load({"refrigerant": "R1233zd(E)", "pressure_setpoint_bar": 1.0,
                        "pressure_min_bar": 0.5, "points": {"pump": "p.speed_ref"}})
    assert not lines and cfg.refrigerant == "R1233zd(E)" and cfg.points.pump == "p.speed_ref"
    _, lines = _load({"refrigerant": "R22", "pressure_setpoint_bar": 9.0, "ti_s": 0,
                      "colour": 1, "points": {"output": "valve"}})
    text = "\n".join(lines)
    assert "cdu.toml: [two_phase] refrigerant: must be one of R1234ze(E), R1233zd(E)" in text
    assert "[two_phase] pressure_max_bar: must be above pressure_setpoint_bar (9)" in text
    assert "[two_phase] ti_s: must be > 0" in text
    assert "[two_phase] colour: unknown key" in text
    assert "[two_phase.points] output: must name a point" in text
