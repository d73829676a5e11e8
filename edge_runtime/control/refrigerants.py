"""Saturation property tables of two-phase coolants, built from published correlations.

Source: the ancillary equations that CoolProp publishes for each fluid (CoolProp 6.x,
`dev/fluids/<fluid>.json`, "ANCILLARIES": pS, rhoL, rhoV, hLV), each fitted to the fluid's
reference Helmholtz equation of state:
- R1234ze(E): Thol, M. and Lemmon, E. W., "Equation of State for the Thermodynamic Properties
  of trans-1,3,3,3-Tetrafluoropropene [R-1234ze(E)]", Int. J. Thermophys. 37:28 (2016), the
  equation NIST REFPROP uses. pS deviates from that equation by at most 0.0066 %.
- R1233zd(E): Mondejar, M. E., McLinden, M. O. and Lemmon, E. W., J. Chem. Eng. Data 60:2477
  (2015). pS within 0.0036 % of the equation.
Forms (theta = 1 - T/Tc, molar densities in mol/m3):
    p_sat  = pc * exp(Tc/T * sum(n_i theta^t_i))
    rho_l  = rhoc * (1 + sum(n_i theta^t_i))
    rho_v  = rhoc * exp(Tc/T * sum(n_i theta^t_i))
    h_lv   = sum(A_i T^i) / sum(B_i T^i)   [J/mol]; h_l the same form (its slope: liquid cp)
From them a table is built once at 0.5 K steps; look-ups interpolate ln p linearly in 1/T
(Clausius-Clapeyron makes that nearly exact) and the other columns linearly in T.

R1234ze(E) values from the table (checked in tests/test_two_phase.py):
    T [degC]   p_sat [kPa abs]   h_lv [kJ/kg]   rho_l [kg/m3]   rho_v [kg/m3]   cp_l
    -18.97         101.3             195.6          1293.5           5.71           (NBP)
      0.0          216.5             184.2          1240.1          11.71      1.32
     25.0          498.5             166.9          1163.2          26.32      1.39
     40.0          766.4             154.8          1111.6          40.63      1.44
     60.0         1276.4             135.5          1032.5          70.07
The normal boiling point 254.177 K (NIST REFPROP fluid file R1234ZEE.FLD) is an independent
check of p_sat; h_lv agrees with the Clapeyron equation on p_sat, rho_l and rho_v within 0.1 %.
R515B (R1234ze(E)/R227ea 91.1/8.9) is a mixture: no pure-fluid ancillary exists, so it is not
tabulated here; its glide is below 0.1 K and R1234ze(E) is the closest stand-in.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ancillaries:
    """Published saturation correlations of one fluid (CoolProp ancillary form)."""

    name: str
    molar_mass: float  # kg/mol
    tc_k: float  # reducing temperature
    pc_pa: float  # reducing pressure
    rhoc: float  # reducing molar density, mol/m3
    t_min_k: float
    ps: tuple[Sequence[float], Sequence[float]]  # (n, t)
    rho_l: tuple[Sequence[float], Sequence[float]]
    rho_v: tuple[Sequence[float], Sequence[float]]
    h_lv: tuple[Sequence[float], Sequence[float]]  # (A, B) rational polynomial, J/mol
    h_l: tuple[Sequence[float], Sequence[float]]  # saturated liquid enthalpy, same form

    def _sum(self, coeffs: tuple[Sequence[float], Sequence[float]], t_k: float) -> float:
        theta = 1.0 - t_k / self.tc_k
        return float(sum(n * theta**t for n, t in zip(*coeffs, strict=True)))

    def p_sat_pa(self, t_k: float) -> float:
        """Saturation pressure (Pa)."""
        return self.pc_pa * math.exp(self.tc_k / t_k * self._sum(self.ps, t_k))

    def rho_l_kg_m3(self, t_k: float) -> float:
        """Saturated liquid density."""
        return self.rhoc * (1.0 + self._sum(self.rho_l, t_k)) * self.molar_mass

    def rho_v_kg_m3(self, t_k: float) -> float:
        """Saturated vapour density."""
        return self.rhoc * math.exp(self.tc_k / t_k * self._sum(self.rho_v, t_k)) * self.molar_mass

    def h_lv_j_kg(self, t_k: float) -> float:
        """Latent heat of vaporisation (J/kg)."""
        return _rational(self.h_lv, t_k) / self.molar_mass

    def cp_l_j_kg_k(self, t_k: float) -> float:
        """Liquid specific heat along saturation: the slope of h_l (J/(kg K))."""
        return (_rational(self.h_l, t_k + 0.5) - _rational(self.h_l, t_k - 0.5)) / self.molar_mass


def _rational(coeffs: tuple[Sequence[float], Sequence[float]], t_k: float) -> float:
    a, b = coeffs
    return (sum(c * t_k**i for i, c in enumerate(a))
            / sum(c * t_k**i for i, c in enumerate(b)))


R1234ZE_E = Ancillaries(
    name="R1234ze(E)", molar_mass=0.1140415928, tc_k=382.52, pc_pa=3_636_250.0, rhoc=4290.0,
    t_min_k=168.62,
    ps=((-0.0007362365256237661, -7.554649594027046, 1.7584756226770677, -2.0617331468344315,
         -0.9980943477495106, -3.038350758700181),
        (0.052, 1.0, 1.5, 2.3333333333333335, 4.333333333333333, 4.833333333333333)),
    rho_l=((-8.42282936179494, 35.592169315198404, -27.748444759203856, 3.0869391194586315,
            0.49297732386262993, 2436.2254360953007),
           (0.07, 0.096, 0.108, 0.383, 2.6666666666666665, 25.0)),
    rho_v=((1.9861295422409955, -3.601910664347684, 110.97544193749978, -113.63727224413014,
            -1.7016720393939881, -5.765500312051858),
           (0.105, 0.139, 0.3875, 0.3945, 1.3333333333333333, 4.166666666666667)),
    h_lv=((11553.534778217487, 749.5644616901801, -12.24933164286461, 0.08904722245300871,
           -0.0003683078348612284, 8.880020292211966e-07, -1.1669649923297415e-09,
           6.498898988423195e-13),
          (1.0, -0.0025875815684662192)),
    h_l=((-60534.88490162734, 94.49079979430935, 2.656443028260951, -0.02234090141143258,
          9.576517005993078e-05, -2.38611759793405e-07, 3.2291789550110207e-10,
          -1.8502157630275585e-13),
         (1.0, -0.002587983702663137)),
)

R1233ZD_E = Ancillaries(
    name="R1233zd(E)", molar_mass=0.1304944, tc_k=439.6, pc_pa=3_623_637.7763647926,
    rhoc=3680.0, t_min_k=195.15,
    ps=((-0.022056428268671224, -7.337544415201162, 14.03841456499518, -16.04732391471705,
         3.2807262799748163, -5.390786022427361),
        (0.6666666666666666, 1.0, 2.0, 2.1666666666666665, 3.3333333333333335,
         4.333333333333333)),
    rho_l=((16.767750633630982, -24.215239323082297, -18094.711852967135, 6521.373830020889,
            11583.445516152233, 0.31633145345218117),
           (0.148, 0.16666666666666666, 0.3835, 0.378, 0.3865, 3.1666666666666665)),
    rho_v=((210.7419834743298, -290.0525451328808, 76.74147901184666, -2.7915388364482547,
            -2.71021654219322, -3.5382844877211532),
           (0.3525, 0.357, 0.3685, 0.8333333333333334, 3.0, 4.833333333333333)),
    h_lv=((9721.689029643387, 868.321479933418, -11.947886366778077, 0.07451936674611152,
           -0.00026561872113748595, 5.539654713238456e-07, -6.314629100315424e-10,
           3.0550543656313694e-13),
          (1.0, -0.00225763925637986)),
    h_l=((-71247.75391513447, -52.09859984977842, 4.351974277673617, -0.029038341355185026,
          0.00010339701176715967, -2.150113123580222e-07, 2.4412313753771395e-10,
          -1.1769705302829076e-13),
         (1.0, -0.002259094808110384)),
)


class OutOfTable(ValueError):
    """A pressure or temperature outside the table's range."""


class SaturationTable:
    """Saturation properties of one fluid over [t_lo_c, t_hi_c], interpolated."""

    def __init__(self, fluid: Ancillaries, t_lo_c: float = -30.0, t_hi_c: float = 100.0,
                 step_k: float = 0.5) -> None:
        self.fluid = fluid
        n = round((t_hi_c - t_lo_c) / step_k)
        self.t_c = [t_lo_c + i * step_k for i in range(n + 1)]
        tk = [t + 273.15 for t in self.t_c]
        self.p_kpa = [fluid.p_sat_pa(t) / 1000.0 for t in tk]
        self.h_lv_kj_kg = [fluid.h_lv_j_kg(t) / 1000.0 for t in tk]
        self.rho_l = [fluid.rho_l_kg_m3(t) for t in tk]
        self.rho_v = [fluid.rho_v_kg_m3(t) for t in tk]
        self.cp_l_kj_kg_k = [fluid.cp_l_j_kg_k(t) / 1000.0 for t in tk]
        self._inv_t = [1.0 / t for t in tk]
        self._ln_p = [math.log(p) for p in self.p_kpa]

    @property
    def p_range_kpa(self) -> tuple[float, float]:
        """Lowest and highest tabulated saturation pressure."""
        return self.p_kpa[0], self.p_kpa[-1]

    def t_sat_c(self, p_kpa: float) -> float:
        """Saturation temperature (degC) at an absolute pressure (kPa); OutOfTable outside."""
        if not (math.isfinite(p_kpa) and self.p_kpa[0] <= p_kpa <= self.p_kpa[-1]):
            lo, hi = self.p_range_kpa
            raise OutOfTable(f"{self.fluid.name}: {p_kpa!r} kPa outside the table "
                             f"({lo:.1f}..{hi:.1f} kPa)")
        ln_p = math.log(p_kpa)
        i = min(max(bisect.bisect_right(self._ln_p, ln_p) - 1, 0), len(self._ln_p) - 2)
        f = (ln_p - self._ln_p[i]) / (self._ln_p[i + 1] - self._ln_p[i])
        inv_t = self._inv_t[i] + f * (self._inv_t[i + 1] - self._inv_t[i])
        return 1.0 / inv_t - 273.15

    def _at(self, column: list[float], t_c: float) -> float:
        if not (math.isfinite(t_c) and self.t_c[0] <= t_c <= self.t_c[-1]):
            raise OutOfTable(f"{self.fluid.name}: {t_c!r} degC outside the table "
                             f"({self.t_c[0]:g}..{self.t_c[-1]:g} degC)")
        i = min(max(bisect.bisect_right(self.t_c, t_c) - 1, 0), len(self.t_c) - 2)
        f = (t_c - self.t_c[i]) / (self.t_c[i + 1] - self.t_c[i])
        return column[i] + f * (column[i + 1] - column[i])

    def p_sat_kpa(self, t_c: float) -> float:
        """Saturation pressure (kPa abs) at t_c, ln p interpolated in 1/T."""
        if not (math.isfinite(t_c) and self.t_c[0] <= t_c <= self.t_c[-1]):
            raise OutOfTable(f"{self.fluid.name}: {t_c!r} degC outside the table")
        inv_t = 1.0 / (t_c + 273.15)
        i = min(max(bisect.bisect_right(self.t_c, t_c) - 1, 0), len(self.t_c) - 2)
        f = (inv_t - self._inv_t[i]) / (self._inv_t[i + 1] - self._inv_t[i])
        return math.exp(self._ln_p[i] + f * (self._ln_p[i + 1] - self._ln_p[i]))

    def h_lv_at(self, t_c: float) -> float:
        """Latent heat (kJ/kg) at t_c."""
        return self._at(self.h_lv_kj_kg, t_c)

    def rho_l_at(self, t_c: float) -> float:
        """Saturated liquid density (kg/m3) at t_c."""
        return self._at(self.rho_l, t_c)

    def rho_v_at(self, t_c: float) -> float:
        """Saturated vapour density (kg/m3) at t_c."""
        return self._at(self.rho_v, t_c)

    def cp_l_at(self, t_c: float) -> float:
        """Liquid specific heat (kJ/(kg K)) along saturation at t_c."""
        return self._at(self.cp_l_kj_kg_k, t_c)


FLUIDS: dict[str, Ancillaries] = {"R1234ze(E)": R1234ZE_E, "R1233zd(E)": R1233ZD_E}
_TABLES: dict[str, SaturationTable] = {}


def table(name: str) -> SaturationTable:
    """The (cached) saturation table of a named fluid; KeyError lists the known ones."""
    if name not in FLUIDS:
        raise KeyError(f"unknown refrigerant {name!r}; known: {', '.join(FLUIDS)}")
    if name not in _TABLES:
        _TABLES[name] = SaturationTable(FLUIDS[name])
    return _TABLES[name]

