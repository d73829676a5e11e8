"""Refrigerant saturation properties for the truth models, read from committed tables.

The tables (data/saturation_*.csv) come from CoolProp's reference equations of state
(gen_saturation.py writes them; tests/test_refrigerant_coolprop.py checks they are current),
so the plant does not take its physics from the controller's own refrigerant tables
(edge_runtime/control/refrigerants.py). 0.5 K rows from -30 to 100 degC; between rows ln p
is interpolated linearly in 1/T (Clausius-Clapeyron makes it nearly exact) and the other
columns linearly in T (within 0.005 % of CoolProp between rows, see the test). A temperature
outside the table raises ValueError naming the fluid: the plant has left what is modelled.
The methods take kelvin and return SI units, as the controller's Ancillaries do.
"""

from __future__ import annotations

import bisect
import csv
import math
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
FILES = {"R1234ze(E)": "saturation_r1234ze_e.csv", "R1233zd(E)": "saturation_r1233zd_e.csv"}


class SaturationTruth:
    """One fluid's table; look-ups by temperature in kelvin."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        with path.open(newline="") as fh:
            rows = [r for r in csv.reader(fh) if r and not r[0].startswith("#")]
        header, data = rows[0], [[float(x) for x in r] for r in rows[1:]]
        self._col = {key: [r[i] for r in data] for i, key in enumerate(header)}
        self._t_k = [t + 273.15 for t in self._col["t_c"]]
        self._inv_t = [1.0 / t for t in self._t_k]
        self._ln_p = [math.log(p) for p in self._col["p_sat_pa"]]

    def _index(self, t_k: float) -> int:
        if not (math.isfinite(t_k) and self._t_k[0] <= t_k <= self._t_k[-1]):
            raise ValueError(f"{self.name}: {t_k - 273.15!r} degC is outside the saturation "
                             f"table ({self._t_k[0] - 273.15:g}..{self._t_k[-1] - 273.15:g})")
        return min(bisect.bisect_right(self._t_k, t_k) - 1, len(self._t_k) - 2)

    def _linear(self, key: str, t_k: float) -> float:
        i = self._index(t_k)
        col = self._col[key]
        f = (t_k - self._t_k[i]) / (self._t_k[i + 1] - self._t_k[i])
        return col[i] + f * (col[i + 1] - col[i])

    def p_sat_pa(self, t_k: float) -> float:
        """Saturation pressure (Pa)."""
        i = self._index(t_k)
        f = (1.0 / t_k - self._inv_t[i]) / (self._inv_t[i + 1] - self._inv_t[i])
        return math.exp(self._ln_p[i] + f * (self._ln_p[i + 1] - self._ln_p[i]))

    def rho_l_kg_m3(self, t_k: float) -> float:
        """Saturated liquid density."""
        return self._linear("rho_l_kg_m3", t_k)

    def rho_v_kg_m3(self, t_k: float) -> float:
        """Saturated vapour density."""
        return self._linear("rho_v_kg_m3", t_k)

    def h_lv_j_kg(self, t_k: float) -> float:
        """Latent heat of vaporisation (J/kg)."""
        return self._linear("h_v_j_kg", t_k) - self._linear("h_l_j_kg", t_k)

    def cp_l_j_kg_k(self, t_k: float) -> float:
        """Saturated liquid isobaric specific heat (J/(kg K))."""
        return self._linear("cp_l_j_kg_k", t_k)

    def cp_v_j_kg_k(self, t_k: float) -> float:
        """Saturated vapour isobaric specific heat (J/(kg K))."""
        return self._linear("cp_v_j_kg_k", t_k)


_CACHE: dict[str, SaturationTruth] = {}


def truth(name: str) -> SaturationTruth:
    """The (cached) table of a named fluid; KeyError lists the known ones."""
    if name not in FILES:
        raise KeyError(f"unknown refrigerant {name!r}; known: {', '.join(FILES)}")
    if name not in _CACHE:
        _CACHE[name] = SaturationTruth(name, DATA_DIR / FILES[name])
    return _CACHE[name]
