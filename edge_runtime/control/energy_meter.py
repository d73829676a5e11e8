"""Thermal energy metering (spec 6.3.2 d, 9.2.1 c): heat = integral of rho V cp dT, +-2 %.

Heat power from a volumetric flow meter and a supply/return temperature pair, as a heat meter
calculator (EN 1434) does it:
    P = rho(T_meter) x V x cp(T_mean) x (T_supply - T_return)
with rho at the temperature where the flow meter sits (supply or return pipe) and cp at the
mean of the pair. Energy is integrated with the trapezoidal rule over the scan's samples;
samples with a BAD input are not integrated, and the time lost is counted.

Fluid properties (linear interpolation in T; outside the table a FluidRangeError):
- "water": saturated liquid water from the IAPWS-95 formulation (Wagner and Pruss, J. Phys.
  Chem. Ref. Data 31:387, 2002) as tabulated in Perry's Chemical Engineers' Handbook, 9th ed.,
  Table 2-135 (molar values / 18.01528 g/mol), 0.01 to 116.85 degC. At 0.1-1.6 MPa the
  pressure effect on cp and rho is below 0.1 %.
- "pg32": propylene glycol - water, 32 % by mass, Melinder (2007) data as shipped with
  CoolProp (dev/incompressible_liquids/.../Melinder, Propylene Glycol_{Cp,Rho}.txt),
  -14 to 40 degC: the published data stop at 40 degC, so hotter glycol loops are refused
  rather than extrapolated.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


class FluidRangeError(ValueError):
    """A temperature outside a fluid's property table."""


@dataclass(frozen=True, slots=True)
class FluidTable:
    """Density (kg/m3) and specific heat (kJ/(kg K)) against temperature (degC)."""

    name: str
    t_c: tuple[float, ...]
    rho: tuple[float, ...]
    cp: tuple[float, ...]

    def _interp(self, column: tuple[float, ...], t: float) -> float:
        if not self.t_c[0] <= t <= self.t_c[-1]:
            raise FluidRangeError(f"{self.name}: {t!r} degC outside its property table "
                                  f"({self.t_c[0]:g}..{self.t_c[-1]:g} degC)")
        i = min(max(bisect.bisect_right(self.t_c, t) - 1, 0), len(self.t_c) - 2)
        f = (t - self.t_c[i]) / (self.t_c[i + 1] - self.t_c[i])
        return column[i] + f * (column[i + 1] - column[i])

    def rho_kg_m3(self, t_c: float) -> float:
        """Density at t_c."""
        return self._interp(self.rho, t_c)

    def cp_kj_kg_k(self, t_c: float) -> float:
        """Isobaric specific heat at t_c."""
        return self._interp(self.cp, t_c)


WATER = FluidTable(
    "water",
    t_c=(0.01, 6.85, 16.85, 26.85, 36.85, 46.85, 56.85, 66.85, 76.85, 86.85, 96.85, 106.85,
         116.85),
    rho=(999.79, 999.87, 998.77, 996.52, 993.34, 989.38, 984.75, 979.51, 973.71, 967.38,
         960.59, 953.33, 945.62),
    cp=(4.2199, 4.2013, 4.1869, 4.1809, 4.1795, 4.1807, 4.1838, 4.1884, 4.1946, 4.2024,
        4.2121, 4.2241, 4.2385),
)

PG32 = FluidTable(
    "pg32",
    t_c=(-14.0, -10.0, 0.0, 10.0, 20.0, 30.0, 40.0),
    rho=(1037.87, 1036.97, 1034.12, 1030.45, 1026.01, 1020.88, 1015.12),
    cp=(3.8768, 3.8742, 3.8720, 3.8755, 3.8842, 3.8974, 3.9146),
)

FLUID_TABLES: dict[str, FluidTable] = {"water": WATER, "pg32": PG32}


@dataclass
class ThermalEnergyMeter:
    """Integrates heat from flow and a temperature pair; sans-IO, fed once per scan."""

    fluid: FluidTable = WATER
    flow_at_supply: bool = False  # where the flow meter sits (density temperature)
    energy_kwh: float = 0.0  # heat delivered (supply warmer than return)
    reverse_kwh: float = 0.0  # heat taken back (return warmer than supply), kept apart
    missing_s: float = 0.0  # time with no valid sample
    power_kw: float = 0.0
    _last: float | None = field(default=None, repr=False)

    def power(self, flow_lpm: float, t_supply: float, t_return: float) -> float:
        """Heat power (kW) for one sample; FluidRangeError outside the fluid's table."""
        t_rho = t_supply if self.flow_at_supply else t_return
        mass = self.fluid.rho_kg_m3(t_rho) * max(flow_lpm, 0.0) / 60_000.0  # kg/s
        cp = self.fluid.cp_kj_kg_k((t_supply + t_return) / 2.0)
        return mass * cp * (t_supply - t_return)

    def step(self, flow_lpm: float | None, t_supply: float | None, t_return: float | None,
             dt: float) -> float | None:
        """Add one scan: trapezoid from the previous sample; None inputs pause integration."""
        if flow_lpm is None or t_supply is None or t_return is None:
            self.missing_s += dt
            self._last = None
            return None
        try:
            p = self.power(flow_lpm, t_supply, t_return)
        except FluidRangeError:
            self.missing_s += dt
            self._last = None
            raise
        if self._last is not None:
            e = (p + self._last) / 2.0 * dt / 3600.0
            if e >= 0.0:
                self.energy_kwh += e
            else:
                self.reverse_kwh -= e
        self._last = p
        self.power_kw = p
        return p
