"""The whole plant in simulated time: IT load, coolant loop, rack meter and battery, and
optionally a two-phase loop and a district-heat recovery network (heat_plants.py).

`Plant.step(dt)` is the only way time moves; nothing here reads a clock or does I/O, so tests
and benchmarks replay scenarios faster than real time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pswd_plant_sim.battery import Battery, BatteryConfig
from pswd_plant_sim.heat_plants import (
    DistrictHeatPlant,
    DistrictHeatSetup,
    TwoPhasePlant,
    TwoPhaseSetup,
)
from pswd_plant_sim.loop import CoolantLoop, LoopConfig
from pswd_plant_sim.trace import ConstantPower, PowerSource, Trace, TraceConfig


@dataclass(frozen=True, slots=True)
class MeterConfig:
    """Electrical characteristics of the rack feed."""

    voltage_v: float = 415.0  # line to line, three phase
    frequency_hz: float = 50.0


class RackMeter:
    """A three-phase power meter on the IT feed: power, energy, PF, THD, V, I, f."""

    def __init__(self, config: MeterConfig | None = None, rated_kw: float = 100.0) -> None:
        self.config = config or MeterConfig()
        self.rated_kw = rated_kw
        self.power_kw = 0.0
        self.energy_kwh = 0.0
        self._t = 0.0

    def step(self, dt: float, power_kw: float) -> None:
        """Integrate energy with this step's power."""
        self._t += dt
        self.power_kw = power_kw
        self.energy_kwh += power_kw * dt / 3600.0

    @property
    def load(self) -> float:
        """Load as a fraction of rated power."""
        return min(max(self.power_kw / self.rated_kw, 0.0), 1.5)

    @property
    def power_factor(self) -> float:
        """Server PSUs with active PFC: ~0.99 at full load, worse at light load."""
        return 0.90 + 0.09 * math.sqrt(min(self.load, 1.0))

    @property
    def thd_current_pct(self) -> float:
        """Current distortion falls as the PSUs load up."""
        return 4.0 + 8.0 * (1.0 - min(self.load, 1.0))

    @property
    def thd_voltage_pct(self) -> float:
        """Voltage distortion rises a little with load."""
        return 1.2 + 0.8 * min(self.load, 1.0)

    @property
    def voltage_v(self) -> float:
        """Line voltage with a slow wander and a drop under load."""
        c = self.config
        return c.voltage_v * (1.0 + 0.004 * math.sin(self._t / 37.0) - 0.01 * self.load)

    @property
    def frequency_hz(self) -> float:
        """Grid frequency with a slow wander."""
        return self.config.frequency_hz + 0.02 * math.sin(self._t / 53.0)

    @property
    def current_a(self) -> float:
        """Phase current of a balanced three-phase load."""
        return self.power_kw * 1000.0 / (math.sqrt(3.0) * self.voltage_v * self.power_factor)


@dataclass(frozen=True, slots=True)
class PlantConfig:
    """Everything physical; built by config.py or directly in tests."""

    trace: TraceConfig = field(default_factory=TraceConfig)
    pattern: str = "training"  # or "constant"
    constant_frac: float = 0.8  # constant pattern: this fraction of the peak
    loop: LoopConfig = field(default_factory=LoopConfig)
    battery: BatteryConfig = field(default_factory=BatteryConfig)
    meter: MeterConfig = field(default_factory=MeterConfig)
    two_phase: TwoPhaseSetup | None = None  # [two_phase]: a pumped two-phase loop
    district_heat: DistrictHeatSetup | None = None  # [district_heat]: heat recovery


@dataclass(frozen=True, slots=True)
class PlantState:
    """A snapshot of the model's truth (not what the sensors say)."""

    t: float
    it_demand_kw: float
    it_power_kw: float
    grid_kw: float
    battery_ac_kw: float
    soc_pct: float
    battery_state: str
    supply_c: float
    return_c: float
    rack_inlet_c: float
    rack_outlet_c: float
    flow_lpm: float
    head_bar: float
    supply_bar: float
    return_bar: float
    hx_kw: float
    fw_flow_lpm: float
    fw_return_c: float
    valve_pct: float
    pump_speeds_pct: tuple[float, ...]
    pump_flows_lpm: tuple[float, ...]
    pump_power_kw: float
    leak_state: int

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-friendly) of the snapshot."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class Plant:
    """IT load -> coolant loop; IT feed metered; battery on the grid side of the meter."""

    def __init__(self, config: PlantConfig | None = None, *,
                 power: PowerSource | None = None) -> None:
        self.config = c = config or PlantConfig()
        if power is None:
            trace = Trace(c.trace)
            power = (trace if c.pattern == "training"
                     else ConstantPower(c.trace.peak_kw * c.constant_frac))
        self.power = power
        self.loop = CoolantLoop(c.loop)
        self.battery = Battery(c.battery)
        self.meter = RackMeter(c.meter, rated_kw=c.trace.peak_kw)
        self.two_phase = TwoPhasePlant(c.two_phase, c.loop) if c.two_phase else None
        self.district_heat = (DistrictHeatPlant(c.district_heat, c.loop) if c.district_heat
                              else None)
        self.t = 0.0
        self.it_demand_kw = 0.0

    @property
    def it_power_kw(self) -> float:
        """IT power actually drawn (demand after thermal throttling)."""
        return self.meter.power_kw

    @property
    def grid_kw(self) -> float:
        """What the grid supplies: IT load minus battery discharge."""
        return self.meter.power_kw - self.battery.ac_kw

    def step(self, dt: float) -> None:
        """Advance the whole plant by dt seconds."""
        if dt <= 0.0:
            return
        self.t += dt
        self.it_demand_kw = self.power.power_at(self.t)
        it_kw = self.it_demand_kw * self.loop.throttle()
        self.meter.step(dt, it_kw)
        self.loop.step(dt, it_kw)
        self.battery.step(dt)
        if self.two_phase is not None:
            self.two_phase.step(dt, it_kw)
        if self.district_heat is not None:
            self.district_heat.step(dt, it_kw, self.loop.return_c)

    @property
    def elements(self) -> frozenset[str]:
        """The optional elements fitted ("two_phase", "district_heat")."""
        return frozenset(name for name, e in (("two_phase", self.two_phase),
                                              ("district_heat", self.district_heat)) if e)

    @property
    def state(self) -> PlantState:
        """Snapshot of the truth."""
        loop, bat = self.loop, self.battery
        return PlantState(
            t=self.t,
            it_demand_kw=self.it_demand_kw,
            it_power_kw=self.it_power_kw,
            grid_kw=self.grid_kw,
            battery_ac_kw=bat.ac_kw,
            soc_pct=bat.soc_pct,
            battery_state=bat.state,
            supply_c=loop.supply_c,
            return_c=loop.return_c,
            rack_inlet_c=loop.rack_inlet_c,
            rack_outlet_c=loop.rack_outlet_c,
            flow_lpm=loop.flow_lpm,
            head_bar=loop.head_bar,
            supply_bar=loop.supply_pressure_bar,
            return_bar=loop.return_pressure_bar,
            hx_kw=loop.hx_kw,
            fw_flow_lpm=loop.fw_flow_lpm,
            fw_return_c=loop.fw_return_c,
            valve_pct=loop.valve.position_pct,
            pump_speeds_pct=tuple(p.speed_pct for p in loop.pumps),
            pump_flows_lpm=tuple(p.flow_lpm for p in loop.pumps),
            pump_power_kw=loop.pump_power_kw,
            leak_state=loop.leak.state,
        )
