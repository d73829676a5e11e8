"""Truth model of a pumped two-phase loop: evaporators, condenser with a water valve, pump.

Lumped: the loop's saturation temperature moves with the heat balance of its thermal mass
(refrigerant + metal), C dT_sat/dt = Q_evap - Q_cond, Q_cond = UA x valve x (T_sat - T_water).
The condenser also subcools the liquid by `subcool_k`. The evaporators get the pumped liquid;
their outlet is subcooled liquid, a two-phase mixture at T_sat or superheated vapour, from the
energy balance. Properties come from CoolProp's reference equations of state through the
committed tables of saturation_truth.py, not from the controller's own refrigerant tables
(edge_runtime.control.refrigerants): a property error of the controller shows up as a
control error here instead of cancelling out. Sensors add seeded noise and quantisation.
Sans-IO: time moves only in `step(dt)`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pswd_plant_sim.saturation_truth import truth


@dataclass(frozen=True, slots=True)
class TwoPhaseLoopConfig:
    """Plant parameters."""

    refrigerant: str = "R1234ze(E)"
    thermal_mass_kj_per_k: float = 200.0
    ua_max_kw_per_k: float = 20.0
    water_c: float = 20.0
    subcool_k: float = 3.0
    flow_max_lpm: float = 120.0
    initial_t_sat_c: float = 28.0
    pressure_noise_bar: float = 0.002
    temp_noise_c: float = 0.03
    seed: int = 1


@dataclass(frozen=True, slots=True)
class TwoPhaseReading:
    """What the transmitters report (gauge bar, degC, L/min)."""

    pressure_bar: float
    inlet_c: float
    outlet_c: float
    flow_lpm: float


class TwoPhaseLoop:
    """The plant; `step(dt, heat_kw=, valve_pct=, pump_pct=)`, then `read()`."""

    def __init__(self, config: TwoPhaseLoopConfig | None = None) -> None:
        self.config = c = config or TwoPhaseLoopConfig()
        self.fluid = truth(c.refrigerant)
        self.t_sat_c = c.initial_t_sat_c
        self.quality = 0.0
        self.outlet_c = self.t_sat_c
        self.flow_lpm = 0.0
        self.q_cond_kw = 0.0
        self.water_c = c.water_c  # condenser water inlet; a disturbance may change it
        self._rng = random.Random(c.seed)

    @property
    def pressure_abs_kpa(self) -> float:
        """Loop pressure (kPa abs) = saturation pressure of the loop temperature."""
        return self.fluid.p_sat_pa(self.t_sat_c + 273.15) / 1000.0

    @property
    def inlet_c(self) -> float:
        """Liquid temperature at the evaporator inlet."""
        return self.t_sat_c - self.config.subcool_k

    def step(self, dt: float, *, heat_kw: float, valve_pct: float, pump_pct: float) -> None:
        """Advance the loop by dt seconds."""
        c, f = self.config, self.fluid
        t_k = self.t_sat_c + 273.15
        self.q_cond_kw = (c.ua_max_kw_per_k * min(max(valve_pct, 0.0), 100.0) / 100.0
                          * (self.t_sat_c - self.water_c))
        self.t_sat_c += (heat_kw - self.q_cond_kw) * dt / c.thermal_mass_kj_per_k
        self.flow_lpm = c.flow_max_lpm * min(max(pump_pct, 0.0), 100.0) / 100.0
        t_in_k = self.inlet_c + 273.15
        m = f.rho_l_kg_m3(t_in_k) * self.flow_lpm / 60_000.0
        cp = f.cp_l_j_kg_k((t_in_k + t_k) / 2.0) / 1000.0
        sensible = cp * c.subcool_k
        if m <= 0.0:
            self.quality = 1.0 + heat_kw
            self.outlet_c = self.t_sat_c + 20.0
            return
        h_lv = f.h_lv_j_kg(t_k) / 1000.0
        self.quality = (heat_kw / m - sensible) / h_lv
        if self.quality < 0.0:
            self.outlet_c = self.inlet_c + heat_kw / (m * cp)
        elif self.quality <= 1.0:
            self.outlet_c = self.t_sat_c
        else:
            # superheat with the saturated vapour's cp (outlet temperature only)
            cp_v = f.cp_v_j_kg_k(t_k) / 1000.0
            self.outlet_c = self.t_sat_c + (self.quality - 1.0) * h_lv / cp_v

    def read(self) -> TwoPhaseReading:
        """Sensor values: noise, then the transmitters' resolution (1 mbar, 0.01 K, 0.1 L/min)."""
        c, g = self.config, self._rng.gauss
        bar = (self.pressure_abs_kpa - 101.325) / 100.0 + g(0.0, c.pressure_noise_bar)
        return TwoPhaseReading(
            pressure_bar=round(bar, 3),
            inlet_c=round(self.inlet_c + g(0.0, c.temp_noise_c), 2),
            outlet_c=round(self.outlet_c + g(0.0, c.temp_noise_c), 2),
            flow_lpm=round(self.flow_lpm * (1.0 + g(0.0, 0.002)), 1))
