"""Two-phase loop and district-heat recovery end to end: a real Node (examples/cdu_heat.toml)
polls the real plant simulator (examples/plant_two_phase.toml) over loopback Modbus TCP,
stepped in simulated time; the truth comes from the simulator's models, never from the node.

Each tick, in this order (as tests/scenario_runner.py): the plant advances one scan period
in 100 ms steps, every driver polls once, one scan runs at the virtual time, every driver
writes what is due. The heat runs scan every 500 ms (the blocks' time constants are tens of
seconds) so ten simulated minutes take a few seconds; the pressure excursion runs at the
example's own 100 ms.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.config.reader import ConfigError, ErrorLog
from edge_runtime.control.heat_recovery import DIRECT, HEAT_PUMP, HeatRecoveryBlock
from edge_runtime.control.pid import Pid, PidConfig
from edge_runtime.control.two_phase import TwoPhaseBlock
from edge_runtime.core.clock import VirtualClock
from edge_runtime.io.modbus import ModbusDevice
from pswd_plant_sim.config import build_sim_config, load_sim_config
from pswd_plant_sim.simulator import Simulator
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
PLANT = ROOT / "examples" / "plant_two_phase.toml"
NODE = ROOT / "examples" / "cdu_heat.toml"
PLANT_STEP_S = 0.1


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = (_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict)
                  else v)
    return out


class HeatRig:
    """examples/plant_two_phase.toml served on free ports, examples/cdu_heat.toml polling it."""

    def __init__(self, *, scan_ms: float, plant: Mapping[str, Any] | None = None,
                 node: Mapping[str, Any] | None = None) -> None:
        with PLANT.open("rb") as fh:
            data = _merge(tomllib.load(fh), plant or {})
        ports: dict[int, int] = {}
        for ep in data["endpoints"].values():
            ports[int(ep["port"])] = ep["port"] = free_port()
        errors = ErrorLog()
        self.sim = Simulator(build_sim_config(data, str(PLANT), PLANT.parent, errors))
        errors.raise_if_any()
        with NODE.open("rb") as fh:
            node_data = _merge(tomllib.load(fh), node or {})
        devices: dict[str, Any] = {}
        for name, dev in node_data["devices"].items():
            m = re.fullmatch(r"(.+):(\d+)", dev["endpoint"])
            assert m is not None
            # simulated time: only a stalled machine could time a loopback request out
            devices[name] = {"endpoint": f"{m[1]}:{ports[int(m[2])]}", "timeout_ms": 5000.0,
                             "poll_ms": scan_ms}
        self.config = load_node_config(NODE, overrides=_merge(dict(node or {}), {
            "devices": devices, "node": {"scan_period_ms": scan_ms, "watchdog_ms": 5 * scan_ms}}))
        self.clock = VirtualClock()
        self.node = assemble(self.config, clock=self.clock, watchdog_thread=False)
        self.period = self.config.scan_period_s
        self.drivers = [d for d in self.node.drivers.values() if isinstance(d, ModbusDevice)]
        blocks = {b.name: b for b in self.node.engine.blocks}
        tp, hr = blocks["two_phase"], blocks["heat_recovery"]
        assert isinstance(tp, TwoPhaseBlock) and isinstance(hr, HeatRecoveryBlock)
        self.two_phase, self.heat_recovery = tp, hr

    async def __aenter__(self) -> HeatRig:
        await self.sim.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ep in self.node._endpoints:
            ep.close()
        await self.sim.stop()

    @property
    def t(self) -> float:
        """Model time (s)."""
        return self.sim.plant.t

    async def tick(self) -> None:
        """Plant forward one period, poll everything, one scan, write what is due."""
        for _ in range(round(self.period / PLANT_STEP_S)):
            self.sim.step(PLANT_STEP_S)
        for d in self.drivers:
            await d.poll_once()
        self.clock.advance(self.period)
        self.node.engine.scan_once(self.clock.monotonic())
        for d in self.drivers:
            await d.write_due()

    def wire(self, device: str, point: str) -> float | None:
        """What the simulated device last received from the node over Modbus."""
        return self.sim.rig.units[device].bank.client_value(point)

    def value(self, point: str) -> float:
        """A latched or derived input of the node (GOOD)."""
        v = self.node.image.value(point)
        assert v is not None, f"{point} is not GOOD: {self.node.image.sample(point)}"
        return v


# -- two-phase loop and heat recovery under the training load --------------------------------
@pytest.mark.anyio
@pytest.mark.timeout(60)
@pytest.mark.parametrize(("source_c", "mode"), [(45.0, HEAT_PUMP), (82.0, DIRECT)],
                         ids=["heat_pump", "direct"])
async def test_two_phase_and_district_heat_held_over_modbus(source_c: float, mode: int) -> None:
    settle_s, run_s = 180.0, 600.0
    async with HeatRig(scan_ms=500.0, plant={"district_heat": {"source_c": source_c}}) as rig:
        tp_cfg, tp = rig.two_phase.config, rig.sim.plant.two_phase
        dh = rig.sim.plant.district_heat
        assert tp is not None and dh is not None
        setpoint = rig.heat_recovery.config.supply_setpoint_c
        t_sat_err = 0.0
        pressures: list[float] = []  # truth and transmitter, after settling
        supply: list[float] = []  # truth, after settling
        supply_read: list[float] = []  # the node's reading, after settling
        for _ in range(round(run_s / rig.period)):
            await rig.tick()
            # the block's saturation temperature, from the pressure on the wire, vs the truth
            t_sat_err = max(t_sat_err, abs(rig.value("two_phase.t_sat_c") - tp.loop.t_sat_c))
            if rig.t >= settle_s:
                pressures += [tp.as_dict()["pressure_bar_g"], rig.value("loop_pressure.pressure")]
                supply.append(dh.model.supply_c)
                supply_read.append(rig.value("dh_supply_temp.temperature"))
        p_lo, p_hi = min(pressures), max(pressures)
        sup_err = max(abs(t - setpoint) for t in supply)
        print(f"\n{source_c:g} degC source: t_sat error {t_sat_err:.3f} K, pressure "
              f"{p_lo:.3f}..{p_hi:.3f} bar g, supply {min(supply):.2f}..{max(supply):.2f} degC "
              f"(read {min(supply_read):.2f}..{max(supply_read):.2f}), metered "
              f"{rig.heat_recovery.meter.energy_kwh:.3f} kWh vs truth {dh.model.energy_kwh:.3f}"
              f" kWh, efficiency {rig.value('heat_recovery.recovery_efficiency_pct'):.1f} % "
              f"(truth {100 * dh.model.source_kwh / dh.model.it_kwh:.1f} %), "
              f"COP {dh.model.cop:.2f}")
        assert t_sat_err <= 0.2
        assert tp_cfg.pressure_min_bar <= p_lo and p_hi <= tp_cfg.pressure_max_bar
        assert tp.loop.quality > 0.0 and rig.value("two_phase.phase") == 1.0  # boiling, not dry
        assert 5.0 < tp.valve.position_pct < 95.0  # regulating, not pinned at a limit
        assert sup_err <= 2.0
        assert max(abs(t - setpoint) for t in supply_read) <= 2.0
        assert rig.value("heat_recovery.mode") == mode
        assert rig.value("heat_recovery.energy_kwh") == pytest.approx(dh.model.energy_kwh,
                                                                      rel=0.02)
        assert dh.model.energy_kwh > 10.0  # ~80 kW for ten minutes: the meter saw real heat
        efficiency = rig.value("heat_recovery.recovery_efficiency_pct")
        assert efficiency >= 60.0
        assert efficiency == pytest.approx(100.0 * dh.model.source_kwh / dh.model.it_kwh,
                                           abs=2.0)
        if mode == HEAT_PUMP:
            assert dh.model.cop > 3.0 and rig.wire("heat_pump", "speed_ref") == pytest.approx(
                rig.heat_recovery.hp_pct, abs=0.01)
        else:
            assert dh.model.compressor_kw == 0.0 and rig.wire("heat_pump", "speed_ref") == 0.0
        codes = {e.code for e in rig.node.events.recent(200)}
        assert not {c for c in codes if c.startswith(("two_phase_", "heat_recovery_"))}, codes


# -- a real pressure excursion: the condenser water gets hot -----------------------------------
@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_pressure_above_high_high_drives_the_condenser_valve_full_on_the_wire() -> None:
    async with HeatRig(scan_ms=100.0) as rig:
        cfg, tp = rig.two_phase.config, rig.sim.plant.two_phase
        assert tp is not None
        while rig.t < 60.0:
            await rig.tick()
        regulating = rig.wire("condenser_valve", "position_cmd")
        assert regulating is not None and regulating < cfg.output_max_pct - 20.0
        tp.loop.water_c = 45.0  # cooling tower lost: the condenser now heats the loop
        crossed_at: float | None = None
        while crossed_at is None:
            assert rig.t < 120.0, "the pressure never crossed high-high"
            await rig.tick()
            if rig.value("loop_pressure.pressure") > cfg.pressure_high_high_bar:
                crossed_at = rig.t
        # the scan that saw it wrote the maximum, and the device holds it from then on
        assert rig.wire("condenser_valve", "position_cmd") == cfg.output_max_pct
        assert "pressure_high_high" in rig.two_phase.alarms
        for _ in range(50):
            await rig.tick()
            assert rig.wire("condenser_valve", "position_cmd") == cfg.output_max_pct
        assert tp.valve.position_pct == pytest.approx(cfg.output_max_pct)
        events = rig.node.events.recent(100)
        assert "two_phase_pressure_high_high" in [e.code for e in events]
        assert any(e.source == "limit.loop_pressure.pressure" for e in events)  # node limits
        tp.loop.water_c = 20.0  # water back: pressure falls, control resumes
        while rig.t < crossed_at + 5.0 + 120.0:
            await rig.tick()
        p = rig.value("loop_pressure.pressure")
        assert cfg.pressure_min_bar < p < cfg.pressure_max_bar
        assert rig.wire("condenser_valve", "position_cmd") < cfg.output_max_pct  # type: ignore[operator]
        assert "two_phase_pressure_high_high_cleared" in [
            e.code for e in rig.node.events.recent(100)]


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_high_high_overrides_a_loop_that_would_not_open_the_valve_fully() -> None:
    """A gentle PI (2 %/bar) starting at 50 % would answer 8.5 bar with ~60 %: the
    high-high override puts 100 % on the wire in the first scan that sees the pressure."""
    node = {"two_phase": {"kp_pct_per_bar": 2.0, "ti_s": 600.0, "on_bad_output_pct": 50.0}}
    async with HeatRig(scan_ms=100.0, plant={"two_phase": {"initial_t_sat_c": 47.0}},
                       node=node) as rig:
        cfg = rig.two_phase.config
        await rig.tick()
        assert rig.value("loop_pressure.pressure") > cfg.pressure_high_high_bar
        assert rig.wire("condenser_valve", "position_cmd") == cfg.output_max_pct
        assert rig.two_phase.alarms == {"pressure_high_high"}
        # the same loop without the override: far from full
        pi = Pid(PidConfig(kp=2.0, ti_s=600.0, out_min=cfg.output_min_pct,
                           out_max=cfg.output_max_pct, direct_acting=True),
                 setpoint=cfg.pressure_setpoint_bar, output=50.0)
        assert pi.update(rig.value("loop_pressure.pressure"), rig.period) < 70.0


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_liquid_pump_over_modbus_holds_the_exit_quality() -> None:
    """With a liquid pump drive bound (tp_pump), the block's quality loop sets its speed."""
    pump = {"io_map": "cdu_pump_vfd", "endpoint": "heat", "unit_id": 12, "binds": "tp_pump"}
    plant = {"trace": {"pattern": "constant", "constant_frac": 0.8},
             "devices": {"refrigerant_pump": pump}}
    node = {"devices": {"refrigerant_pump": {"io_map": "cdu_pump_vfd",
                                             "endpoint": "127.0.0.1:15504", "unit_id": 12}},
            "two_phase": {"quality_target": 0.4, "points": {
                "pump": "refrigerant_pump.speed_ref"}}}
    async with HeatRig(scan_ms=500.0, plant=plant, node=node) as rig:
        tp = rig.sim.plant.two_phase
        assert tp is not None and tp.pump_bound
        while rig.t < 300.0:
            await rig.tick()
        print(f"\nquality {tp.loop.quality:.3f} (target 0.4), liquid pump {tp.pump_pct:.1f} %, "
              f"estimated {rig.value('two_phase.quality'):.3f}")
        assert tp.loop.quality == pytest.approx(0.4, abs=0.05)
        assert rig.value("two_phase.quality") == pytest.approx(tp.loop.quality, abs=0.03)
        assert rig.wire("refrigerant_pump", "speed_ref") == pytest.approx(tp.pump_pct, abs=0.5)


# -- config ------------------------------------------------------------------------------------
@pytest.mark.timeout(10)
def test_plant_without_the_sections_has_no_such_elements() -> None:
    sim = Simulator(load_sim_config(ROOT / "examples" / "plant.toml"))
    assert sim.plant.two_phase is None and sim.plant.district_heat is None
    assert "two_phase" not in sim.get_status() and "district_heat" not in sim.get_status()
    status = Simulator(load_sim_config(PLANT)).get_status()
    assert status["two_phase"]["valve_pct"] == 100.0  # the condenser valve's failsafe
    assert status["devices"]["heat_pump"]["binds"] == "heat_pump"


@pytest.mark.timeout(10)
def test_plant_config_errors_name_file_section_and_key(tmp_path: Path) -> None:
    text = PLANT.read_text()
    text = text.replace('refrigerant = "R1234ze(E)"', 'refrigerant = "R22"\ncolour = 1')
    text = text.replace("capture_fraction = 0.7", "capture_fraction = 1.7")
    text = text.replace('binds = "tp_flow"', 'binds = "tp_valve"')
    bad = tmp_path / "plant.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_sim_config(bad)
    err = str(info.value)
    assert f"{bad}: [two_phase] refrigerant: must be one of R1234ze(E), R1233zd(E)" in err
    assert f"{bad}: [two_phase] colour: unknown key" in err
    assert f"{bad}: [district_heat] capture_fraction: must be <= 1" in err
    assert (f"{bad}: [devices.liquid_flow] binds: 'tp_valve' needs io_map 'control_valve', "
            "not 'flow_meter'") in err
    # a bind to an element the plant does not have
    no_dh = PLANT.read_text().split("[district_heat]")[0] + "\n[endpoints.heat]\nport = 1\n"
    no_dh += '[devices.dh_flow]\nio_map = "flow_meter"\nendpoint = "heat"\nbinds = "dh_flow"\n'
    path = tmp_path / "no_dh.toml"
    path.write_text(no_dh)
    with pytest.raises(ConfigError) as info:
        load_sim_config(path)
    assert (f"{path}: [devices.dh_flow] binds: 'dh_flow' needs a [district_heat] section in "
            "the plant config") in str(info.value)
