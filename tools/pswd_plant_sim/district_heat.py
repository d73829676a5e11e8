"""Truth model of data-centre heat recovery into a district-heating network.

The data-centre loop offers `capture_fraction` of the IT power as heat at `source_c`, through
the rack and loop thermal mass (a first-order lag of `loop_tau_s`). Two ways
into the network's water (return `dh_return_c`, flow set by the DH pump):
- direct: a counterflow exchanger; the supply cannot exceed source_c - approach_k, and the
  heat is what the source offers or what that limit lets the flow take, whichever is less;
- heat pump: the compressor (speed %) extracts up to `hp_source_max_kw` from the loop at
  COP = carnot_fraction x T_cond / (T_cond - T_evap), T_cond = supply + 3 K,
  T_evap = source - 5 K, and delivers source heat + compressor work.
The supply temperature follows the steady value with a first-order lag (exchanger and pipe
mass). Energy truth is the model's own integral of delivered heat, stepped in simulated time.
Water properties here are deliberately not the meter's: density from Kell's equation
(J. Chem. Eng. Data 20:97, 1975) and cp interpolated with a cubic through IAPWS-95 points,
so the meter's property tables are tested too. Sensors add seeded noise and quantisation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_CP_POINTS = ((16.85, 4.1869), (46.85, 4.1807), (76.85, 4.1946), (106.85, 4.2241))


def kell_density(t_c: float) -> float:
    """Water density (kg/m3) at 0.1 MPa, Kell 1975, 0-150 degC."""
    t = t_c
    num = (999.83952 + 16.945176 * t - 7.9870401e-3 * t**2 - 46.170461e-6 * t**3
           + 105.56302e-9 * t**4 - 280.54253e-12 * t**5)
    return num / (1.0 + 16.879850e-3 * t)


def water_cp(t_c: float) -> float:
    """Water cp (kJ/(kg K)): Lagrange cubic through four IAPWS-95 values."""
    total = 0.0
    for i, (ti, ci) in enumerate(_CP_POINTS):
        term = ci
        for j, (tj, _) in enumerate(_CP_POINTS):
            if i != j:
                term *= (t_c - tj) / (ti - tj)
        total += term
    return total


@dataclass(frozen=True, slots=True)
class DistrictHeatConfig:
    """Plant parameters (defaults: a 1 MW IT hall)."""

    capture_fraction: float = 0.8  # share of IT power the liquid loop carries
    loop_tau_s: float = 30.0  # rack and loop thermal mass between IT power and offered heat
    source_c: float = 60.0
    dh_return_c: float = 50.0
    approach_k: float = 3.0
    flow_max_lpm: float = 2000.0
    hp_source_max_kw: float = 1000.0
    carnot_fraction: float = 0.48
    lag_s: float = 15.0
    temp_noise_c: float = 0.02
    flow_noise_frac: float = 0.003
    seed: int = 1


@dataclass(frozen=True, slots=True)
class DistrictHeatReading:
    """What the transmitters report."""

    supply_c: float
    return_c: float
    flow_lpm: float
    source_c: float
    compressor_kw: float


class DistrictHeat:
    """The recovery plant; `step(dt, it_kw=, pump_pct=, hp_pct=)`, then `read()`."""

    def __init__(self, config: DistrictHeatConfig | None = None) -> None:
        self.config = c = config or DistrictHeatConfig()
        self.supply_c = c.dh_return_c
        self.flow_lpm = 0.0
        self.delivered_kw = 0.0
        self.source_kw = 0.0
        self.compressor_kw = 0.0
        self.cop = 0.0
        self.energy_kwh = 0.0  # truth: heat into the network
        self.source_kwh = 0.0  # truth: data-centre heat recovered
        self.it_kwh = 0.0
        self.compressor_kwh = 0.0
        self.offered_kw: float | None = None
        self.source_c = c.source_c  # the loop's heat-source temperature (may follow the loop)
        self._rng = random.Random(c.seed)

    def step(self, dt: float, *, it_kw: float, pump_pct: float, hp_pct: float) -> None:
        """Advance by dt seconds."""
        c = self.config
        self.flow_lpm = c.flow_max_lpm * min(max(pump_pct, 0.0), 100.0) / 100.0
        t_r = c.dh_return_c
        mcp = kell_density(t_r) * self.flow_lpm / 60_000.0 * water_cp(
            (t_r + self.supply_c) / 2.0)  # kW/K
        heat = c.capture_fraction * max(it_kw, 0.0)
        if self.offered_kw is None:
            self.offered_kw = heat
        self.offered_kw += (heat - self.offered_kw) * dt / (c.loop_tau_s + dt)
        offered = self.offered_kw
        hp = min(max(hp_pct, 0.0), 100.0) / 100.0
        if hp > 0.0:
            t_cond = self.supply_c + 3.0 + 273.15
            t_evap = self.source_c - 5.0 + 273.15
            self.cop = c.carnot_fraction * t_cond / max(t_cond - t_evap, 1.0)
            self.source_kw = min(hp * c.hp_source_max_kw, offered)
            self.compressor_kw = self.source_kw / max(self.cop - 1.0, 0.1)
            target_kw = self.source_kw + self.compressor_kw
            steady = t_r + target_kw / mcp if mcp > 0.0 else t_r + 60.0
        else:
            self.cop = 0.0
            self.compressor_kw = 0.0
            cap = mcp * max(self.source_c - c.approach_k - t_r, 0.0)
            self.source_kw = min(offered, cap)
            steady = t_r + self.source_kw / mcp if mcp > 0.0 else t_r
        a = dt / (c.lag_s + dt)
        self.supply_c += (steady - self.supply_c) * a
        self.delivered_kw = mcp * (self.supply_c - t_r)
        self.energy_kwh += self.delivered_kw * dt / 3600.0
        # what the loop gave up: delivered heat less the compressor's share
        self.source_kwh += (self.delivered_kw - self.compressor_kw) * dt / 3600.0
        self.compressor_kwh += self.compressor_kw * dt / 3600.0
        self.it_kwh += max(it_kw, 0.0) * dt / 3600.0

    def read(self) -> DistrictHeatReading:
        """Sensors: noise, then 0.01 K / 0.1 L/min / 0.1 kW resolution."""
        c, g = self.config, self._rng.gauss
        return DistrictHeatReading(
            supply_c=round(self.supply_c + g(0.0, c.temp_noise_c), 2),
            return_c=round(c.dh_return_c + g(0.0, c.temp_noise_c), 2),
            flow_lpm=round(self.flow_lpm * (1.0 + g(0.0, c.flow_noise_frac)), 1),
            source_c=round(self.source_c + g(0.0, c.temp_noise_c), 2),
            compressor_kw=round(self.compressor_kw, 1))
