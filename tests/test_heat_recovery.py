"""Heat recovery: fluid properties, metering against the truth model's energy, supply
temperature held in both modes under an AI-training load, COP, efficiency, alarms, config."""

from __future__ import annotations

import pytest

from edge_runtime.config.reader import ErrorLog, Section
from edge_runtime.control.energy_meter import PG32, WATER, FluidRangeError, ThermalEnergyMeter
from edge_runtime.control.heat_recovery import (
    DIRECT,
    HEAT_PUMP,
    HeatRecoveryBlock,
    HeatRecoveryConfig,
    HeatRecoveryPoints,
    build_heat_recovery_block,
    carnot_cop,
    load_heat_recovery,
)
from edge_runtime.core.events import EventLog
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality, Sample
from edge_runtime.core.ports import InputTable
from pswd_plant_sim.district_heat import (
    DistrictHeat,
    DistrictHeatConfig,
    kell_density,
    water_cp,
)
from pswd_plant_sim.trace import Trace, TraceConfig
from tests.fakes import shipped_image

pytestmark = pytest.mark.timeout(40)


# -- properties and meter ---------------------------------------------------------------------
@pytest.mark.parametrize("t_c", [20.0, 45.0, 60.0, 75.0, 90.0, 105.0])
def test_water_tables_agree_with_independent_formulas(t_c: float) -> None:
    assert WATER.rho_kg_m3(t_c) == pytest.approx(kell_density(t_c), rel=3e-4)
    assert WATER.cp_kj_kg_k(t_c) == pytest.approx(water_cp(t_c), rel=2e-3)


def test_published_points_and_range() -> None:
    assert WATER.rho_kg_m3(76.85) == pytest.approx(973.71)  # IAPWS-95, 350 K
    assert WATER.cp_kj_kg_k(76.85) == pytest.approx(4.1946)
    assert PG32.cp_kj_kg_k(20.0) == pytest.approx(3.884, abs=1e-3)  # Melinder, 32 % PG
    with pytest.raises(FluidRangeError, match="pg32: 60"):
        PG32.rho_kg_m3(60.0)


def test_meter_integrates_and_pauses_on_bad_input() -> None:
    m = ThermalEnergyMeter()
    for _ in range(3601):  # one hour at 1 s: 600 L/min, 75/50 degC
        m.step(600.0, 75.0, 50.0, 1.0)
    rho, cp = WATER.rho_kg_m3(50.0), WATER.cp_kj_kg_k(62.5)
    assert m.energy_kwh == pytest.approx(rho * 0.01 * cp * 25.0, rel=1e-6)
    assert m.step(None, 75.0, 50.0, 1.0) is None and m.missing_s == 1.0


# -- closed loop -------------------------------------------------------------------------------
DEVICES = {"dh_supply_temp": "temperature_transmitter",
           "dh_return_temp": "temperature_transmitter", "dh_flow": "flow_meter",
           "loop_return_temp": "temperature_transmitter", "rack_meter": "rack_power_meter",
           "dh_pump": "cdu_pump_vfd", "heat_pump": "cdu_pump_vfd",
           "dh_pressure": "pressure_transmitter", "loop_pressure": "pressure_transmitter"}


def _image() -> tuple[ProcessImage, InputTable]:
    return shipped_image(DEVICES)


def run_hour(plant_cfg: DistrictHeatConfig, cfg: HeatRecoveryConfig, *, seconds: float = 3600.0,
             dt: float = 0.5, dh_bar: float = 3.0,
             ) -> tuple[DistrictHeat, list[float], tuple[HeatRecoveryBlock, EventLog]]:
    """1 MW IT hall on an AI-training trace; the block scans every dt; supply samples after
    the first 5 minutes."""
    image, live = _image()
    events = EventLog()
    block = build_heat_recovery_block(cfg, events=events)
    plant = DistrictHeat(plant_cfg)
    trace = Trace(TraceConfig(seed=2, site_mw=1.0))
    supply: list[float] = []
    sub = 5
    for k in range(round(seconds / dt)):
        t = k * dt
        r = plant.read()
        g = Quality.GOOD
        for point, value in (("dh_supply_temp.temperature", r.supply_c),
                             ("dh_return_temp.temperature", r.return_c),
                             ("dh_flow.flow", r.flow_lpm),
                             ("loop_return_temp.temperature", r.source_c),
                             ("rack_meter.power_kw", trace.power_at(t)),
                             ("heat_pump.motor_power", r.compressor_kw),
                             ("dh_pressure.pressure", dh_bar),
                             ("loop_pressure.pressure", 2.0)):
            live[point] = Sample(value, g, t)
        image.latch()
        block.step(image, t, dt)
        for i in range(sub):  # the plant and its energy truth at 100 ms
            plant.step(dt / sub, it_kw=trace.power_at(t + i * dt / sub),
                       pump_pct=image.output("dh_pump.speed_ref"),
                       hp_pct=image.output("heat_pump.speed_ref"))
        if t >= 300.0:
            supply.append(plant.supply_c)
    return plant, supply, (block, events)


POINTS = HeatRecoveryPoints(compressor_kw="heat_pump.motor_power",
                            dh_pressure="dh_pressure.pressure",
                            loop_pressure="loop_pressure.pressure")


@pytest.mark.parametrize(("source_c", "mode"), [(82.0, DIRECT), (45.0, HEAT_PUMP)])
def test_supply_held_metered_and_efficient(source_c: float, mode: int) -> None:
    plant, supply, (block, _events) = run_hour(
        DistrictHeatConfig(source_c=source_c), HeatRecoveryConfig(points=POINTS))
    assert block.mode == mode
    assert min(supply) >= 73.0 and max(supply) <= 77.0  # 75 degC +- 2 K after start-up
    # thermal energy metering: within +-2 % of the model's own energy integral
    assert block.meter.energy_kwh == pytest.approx(plant.energy_kwh, rel=0.02)
    eff = block.recovery_efficiency_pct
    truth = 100.0 * plant.source_kwh / plant.it_kwh
    assert eff >= 60.0 and eff == pytest.approx(truth, abs=2.0)
    if mode == HEAT_PUMP:
        assert block.cop == pytest.approx(carnot_cop(0.5, 78.0, source_c - 5.0), rel=2e-3)
        assert 3.5 < plant.cop < 5.5
    assert block.alarms == set()


def test_heat_quality_and_contamination_alarms() -> None:
    # a network pump too small for the heat, and a network below the loop's pressure
    plant, _supply, (_block, events) = run_hour(
        DistrictHeatConfig(source_c=82.0, flow_max_lpm=150.0),
        HeatRecoveryConfig(points=POINTS, quality_delay_s=30.0), seconds=600.0, dh_bar=2.1)
    codes = [e.code for e in events.recent(20)]
    assert "heat_recovery_heat_quality" in codes  # pump at 100 % cannot carry it away
    assert "heat_recovery_contamination_risk" in codes
    assert plant.supply_c > 77.0


# -- config ----------------------------------------------------------------------------------------
def _load(data: dict[str, object]) -> tuple[HeatRecoveryConfig, list[str]]:
    errors = ErrorLog()
    return load_heat_recovery(Section("cdu.toml", "heat_recovery", data, errors), "cdu.toml",
                              errors), errors.lines


def test_config_values_and_errors() -> None:
    cfg, lines = _load({"supply_setpoint_c": 85, "fluid": "water",
                        "points": {"compressor_kw": "hp.motor_power"}})
    assert not lines and cfg.supply_setpoint_c == 85.0
    assert cfg.points.compressor_kw == "hp.motor_power"
    _, lines = _load({"supply_setpoint_c": 95.0, "fluid": "oil", "extra": 1,
                      "points": {"pump": "pump", "dh_pressure": "a.p"}})
    text = "\n".join(lines)
    assert "cdu.toml: [heat_recovery] supply_setpoint_c: must be <= 90, got 95" in text
    assert "[heat_recovery] fluid: must be one of water, pg32" in text
    assert "[heat_recovery] extra: unknown key" in text
    assert "[heat_recovery.points] pump: must name a point" in text
    assert "[heat_recovery.points] loop_pressure: dh_pressure and loop_pressure go together" \
        in text
