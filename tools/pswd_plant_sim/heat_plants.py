"""Optional plant elements beside the coolant loop: a pumped two-phase loop and a
district-heat recovery network, each with the actuators a controller drives over Modbus.

Both are driven by the plant's IT power (after throttling), like the coolant loop, and wrap
the truth models two_phase_loop.py and district_heat.py, which the control blocks' own tests
also use. The transmitters' values (noise and resolution included) are drawn once per plant
step, so every poll between two steps sees the same reading. Sans-IO: time moves only in
`step(dt, it_kw)`.

Binds (`[devices.X] binds = ...`) that reach these elements, with the io_map each needs:
two-phase `tp_pressure`, `tp_inlet_temp`, `tp_outlet_temp`, `tp_flow`, `tp_valve`
(condenser water valve), `tp_pump` (liquid pump); district heat `dh_supply_temp`,
`dh_return_temp`, `dh_source_temp`, `dh_flow`, `dh_pump` (network pump), `heat_pump`
(compressor VFD, motor_power = compressor kW).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from pswd_plant_sim.district_heat import DistrictHeat, DistrictHeatConfig
from pswd_plant_sim.loop import LoopConfig, Pump, Valve
from pswd_plant_sim.two_phase_loop import TwoPhaseLoop, TwoPhaseLoopConfig

TWO_PHASE, DISTRICT_HEAT = "two_phase", "district_heat"

# bind -> (io_map model, element section)
HEAT_BINDS: dict[str, tuple[str, str]] = {
    "tp_pressure": ("pressure_transmitter", TWO_PHASE),
    "tp_inlet_temp": ("temperature_transmitter", TWO_PHASE),
    "tp_outlet_temp": ("temperature_transmitter", TWO_PHASE),
    "tp_flow": ("flow_meter", TWO_PHASE),
    "tp_valve": ("control_valve", TWO_PHASE),
    "tp_pump": ("cdu_pump_vfd", TWO_PHASE),
    "dh_supply_temp": ("temperature_transmitter", DISTRICT_HEAT),
    "dh_return_temp": ("temperature_transmitter", DISTRICT_HEAT),
    "dh_source_temp": ("temperature_transmitter", DISTRICT_HEAT),
    "dh_flow": ("flow_meter", DISTRICT_HEAT),
    "dh_pump": ("cdu_pump_vfd", DISTRICT_HEAT),
    "heat_pump": ("cdu_pump_vfd", DISTRICT_HEAT),
}
HEAT_EXCLUSIVE = ("tp_valve", "tp_pump", "dh_pump", "heat_pump")  # outputs: one writer each


def heat_bind_error(model: str, bind: str, elements: Collection[str]) -> str | None:
    """Why a device of io_map `model` cannot bind `bind` (a HEAT_BINDS key), or None."""
    wanted, element = HEAT_BINDS[bind]
    if element not in elements:
        return f"{bind!r} needs a [{element}] section in the plant config"
    if wanted != model:
        return f"{bind!r} needs io_map {wanted!r}, not {model!r}"
    return None


@dataclass(frozen=True, slots=True)
class TwoPhaseSetup:
    """[two_phase]: the truth model's parameters and how the plant drives it."""

    model: TwoPhaseLoopConfig = field(default_factory=TwoPhaseLoopConfig)
    heat_fraction: float = 1.0  # share of the IT power the evaporators carry
    pump_pct: float = 60.0  # liquid pump speed when no device binds tp_pump
    valve_travel_s: float = 10.0  # condenser valve actuator, full stroke
    initial_valve_pct: float = 100.0  # its failsafe: most condensing, lowest pressure


@dataclass(frozen=True, slots=True)
class DistrictHeatSetup:
    """[district_heat]: the truth model's parameters and how the plant drives it."""

    model: DistrictHeatConfig = field(default_factory=DistrictHeatConfig)
    source_from_loop: bool = False  # source = the coolant loop's return, not source_c
    pump_pct: float = 50.0  # network pump speed when no device binds dh_pump
    hp_pct: float = 0.0  # compressor speed when no device binds heat_pump
    ramp_pct_per_s: float = 20.0  # VFD ramps of both


def _drive(config: LoopConfig, ramp: float | None = None) -> LoopConfig:
    return config if ramp is None else dataclasses.replace(config, pump_ramp_pct_per_s=ramp)


class TwoPhasePlant:
    """The two-phase loop with its condenser valve (and liquid pump when one is bound)."""

    def __init__(self, setup: TwoPhaseSetup, loop: LoopConfig) -> None:
        self.setup = setup
        self.loop = TwoPhaseLoop(setup.model)
        self.valve = Valve(dataclasses.replace(loop, valve_travel_s=setup.valve_travel_s,
                                               initial_valve_pct=setup.initial_valve_pct))
        self.pump = Pump("tp_pump", loop)
        self.pump_bound = False  # set when a device binds tp_pump
        self.heat_kw = 0.0
        self.reading = self.loop.read()

    @property
    def pump_pct(self) -> float:
        """Liquid pump speed the loop sees."""
        return self.pump.speed_pct if self.pump_bound else self.setup.pump_pct

    def step(self, dt: float, it_kw: float) -> None:
        """Actuators, then the loop with its share of the IT heat; new transmitter values."""
        self.valve.step(dt)
        if self.pump_bound:
            self.pump.step(dt)
        self.heat_kw = self.setup.heat_fraction * max(it_kw, 0.0)
        self.loop.step(dt, heat_kw=self.heat_kw, valve_pct=self.valve.position_pct,
                       pump_pct=self.pump_pct)
        self.reading = self.loop.read()

    def as_dict(self) -> dict[str, Any]:
        """The truth now."""
        lp = self.loop
        return {"t_sat_c": lp.t_sat_c, "pressure_bar_g": (lp.pressure_abs_kpa - 101.325) / 100.0,
                "quality": lp.quality, "outlet_c": lp.outlet_c, "flow_lpm": lp.flow_lpm,
                "q_cond_kw": lp.q_cond_kw, "heat_kw": self.heat_kw,
                "valve_pct": self.valve.position_pct, "pump_pct": self.pump_pct,
                "water_c": lp.water_c}


class DistrictHeatPlant:
    """Heat recovery into a district-heat network: network pump and heat-pump compressor."""

    def __init__(self, setup: DistrictHeatSetup, loop: LoopConfig) -> None:
        self.setup = setup
        self.model = DistrictHeat(setup.model)
        drive = _drive(loop, setup.ramp_pct_per_s)
        self.pump = Pump("dh_pump", drive)
        self.compressor = Pump("heat_pump", drive)
        self.pump_bound = self.compressor_bound = False  # set when devices bind them
        self.reading = self.model.read()

    @property
    def pump_pct(self) -> float:
        """Network pump speed the model sees."""
        return self.pump.speed_pct if self.pump_bound else self.setup.pump_pct

    @property
    def hp_pct(self) -> float:
        """Compressor speed the model sees."""
        return self.compressor.speed_pct if self.compressor_bound else self.setup.hp_pct

    def step(self, dt: float, it_kw: float, loop_return_c: float) -> None:
        """Drives, then the network; the pump's shaft power from its duty point."""
        if self.pump_bound:
            self.pump.step(dt)
        if self.compressor_bound:
            self.compressor.step(dt)
        if self.setup.source_from_loop:
            self.model.source_c = loop_return_c
        self.model.step(dt, it_kw=it_kw, pump_pct=self.pump_pct, hp_pct=self.hp_pct)
        s = self.pump.speed_pct / 100.0
        # duty point on a network curve of 1.5 bar at full flow (for motor_power only)
        self.pump.flow_lpm, self.pump.head_bar = self.model.flow_lpm, 1.5 * s * s
        self.reading = self.model.read()

    def as_dict(self) -> dict[str, Any]:
        """The truth now."""
        m = self.model
        return {"supply_c": m.supply_c, "return_c": m.config.dh_return_c,
                "source_c": m.source_c, "flow_lpm": m.flow_lpm, "delivered_kw": m.delivered_kw,
                "source_kw": m.source_kw, "compressor_kw": m.compressor_kw, "cop": m.cop,
                "energy_kwh": m.energy_kwh, "source_kwh": m.source_kwh, "it_kwh": m.it_kwh,
                "compressor_kwh": m.compressor_kwh, "pump_pct": self.pump_pct,
                "hp_pct": self.hp_pct}
