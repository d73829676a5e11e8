"""Pumped two-phase loop (spec 9.1.2, 6.3.1 d): saturation state, vapour quality, pressure.

Every scan, from the loop pressure, evaporator inlet/outlet temperatures, liquid flow and the
heat into the evaporators:
- saturation temperature T_sat(p) from the refrigerant's table (refrigerants.py);
- phase at the evaporator outlet: subcooled (no boiling), two_phase, superheated (dry-out),
  from the outlet temperature against T_sat and the energy balance;
- vapour quality at the outlet from the energy balance
      x = (Q - m cp_l (T_sat - T_in)) / (m h_lv),   m = rho_l(T_in) x liquid flow;
- pressure regulation: a PI loop drives the condenser valve (or condenser pump) to hold the
  pressure at its setpoint inside [pressure_min_bar, pressure_max_bar]. Above
  pressure_high_high_bar the output goes to its maximum at once: that protection is a
  safety-layer rule (safety/protections.py, `<name>.pressure_high_high`), so no force or
  operator hold beats it; this block only tracks it, so regulation resumes without a bump;
- quality control (optional `pump` point): a PI loop on the liquid pump speed holds the exit
  quality at quality_target, so the cold plates never run dry;
- alarms (raised once, cleared once, in the node's EventLog): pressure high / low / high-high,
  dry-out (superheat or quality above quality_max), low inlet subcooling (pump cavitation),
  bad sensors, pressure outside the table.
Derived inputs for the rest of the scan (telemetry, interlocks): `<name>.t_sat_c`,
`<name>.quality`, `<name>.superheat_k`, `<name>.subcooling_k`, `<name>.phase` (0 subcooled,
1 two-phase, 2 superheated), `<name>.mass_flow_kg_s`.
On a BAD pressure the valve goes to `on_bad_output_pct` (default 100: most condensing, lowest
pressure, the safe side) and the PI tracks it, so control resumes without a bump.

TOML shape:

    [two_phase]
    name = "two_phase"
    refrigerant = "R1234ze(E)"        # or "R1233zd(E)"
    pressure_gauge = true             # the transmitter reads gauge pressure
    pressure_setpoint_bar = 5.0       # in the transmitter's terms (gauge here)
    pressure_min_bar = 3.5
    pressure_max_bar = 7.0
    pressure_high_high_bar = 8.0
    kp_pct_per_bar = 40.0             # PI of the condenser output (direct acting)
    ti_s = 20.0
    output_min_pct = 5.0
    output_max_pct = 100.0
    on_bad_output_pct = 100.0
    heat_fraction = 1.0               # share of the heat point that enters the evaporators
    phase_band_k = 0.5
    superheat_alarm_k = 2.0
    subcooling_min_k = 1.0
    quality_max = 0.8
    quality_target = 0.5              # used only with points.pump
    pump_kp_pct = 60.0
    pump_ti_s = 30.0
    pump_min_pct = 20.0
    [two_phase.points]
    pressure = "loop_pressure.pressure"
    inlet_temp = "evap_in_temp.temperature"
    outlet_temp = "evap_out_temp.temperature"
    flow = "liquid_flow.flow"         # L/min of liquid into the evaporators
    heat_kw = "rack_meter.power_kw"
    output = "condenser_valve.position_cmd"
    pump = ""                         # e.g. "refrigerant_pump.speed_ref"; "" = none

Wiring (cdu role, after the thermal blocks): `cfg = load_two_phase(Section(file, "two_phase",
data["two_phase"], errors), file, errors)`; `build_two_phase_block(cfg, events=engine.events)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edge_runtime.config.devices import read_points
from edge_runtime.config.reader import ErrorLog, Section
from edge_runtime.control.pid import Pid, PidConfig
from edge_runtime.control.refrigerants import FLUIDS, OutOfTable, SaturationTable, table
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality, Sample

SUBCOOLED, TWO_PHASE, SUPERHEATED = 0, 1, 2
PHASES = ("subcooled", "two_phase", "superheated")


@dataclass(frozen=True, slots=True)
class TwoPhasePoints:
    """Image points the block reads and writes."""

    pressure: str = "loop_pressure.pressure"
    inlet_temp: str = "evap_in_temp.temperature"
    outlet_temp: str = "evap_out_temp.temperature"
    flow: str = "liquid_flow.flow"
    heat_kw: str = "rack_meter.power_kw"
    output: str = "condenser_valve.position_cmd"
    pump: str = ""


@dataclass(frozen=True, slots=True)
class TwoPhaseConfig:
    """Two-phase loop settings (pressures in the transmitter's unit, bar)."""

    name: str = "two_phase"
    refrigerant: str = "R1234ze(E)"
    pressure_gauge: bool = True
    pressure_setpoint_bar: float = 5.0
    pressure_min_bar: float = 3.5
    pressure_max_bar: float = 7.0
    pressure_high_high_bar: float = 8.0
    kp_pct_per_bar: float = 40.0
    ti_s: float = 20.0
    output_min_pct: float = 5.0
    output_max_pct: float = 100.0
    on_bad_output_pct: float = 100.0
    heat_fraction: float = 1.0
    phase_band_k: float = 0.5
    superheat_alarm_k: float = 2.0
    subcooling_min_k: float = 1.0
    quality_max: float = 0.8
    quality_target: float = 0.5
    pump_kp_pct: float = 60.0
    pump_ti_s: float = 30.0
    pump_min_pct: float = 20.0
    points: TwoPhasePoints = field(default_factory=TwoPhasePoints)


@dataclass(frozen=True, slots=True)
class SaturationState:
    """What one scan found."""

    t_sat_c: float
    superheat_k: float  # outlet above T_sat
    subcooling_k: float  # T_sat above inlet
    mass_flow_kg_s: float
    quality: float  # outlet vapour quality from the energy balance (may leave 0..1)
    phase: int


def saturation_state(tab: SaturationTable, p_abs_kpa: float, t_in: float, t_out: float,
                     flow_lpm: float, heat_kw: float, band_k: float) -> SaturationState:
    """Energy-balance estimate of the evaporator outlet; OutOfTable outside the table."""
    t_sat = tab.t_sat_c(p_abs_kpa)
    t_liq = min(t_in, t_sat)  # a superheated inlet reading cannot be liquid: clamp
    m = tab.rho_l_at(t_liq) * max(flow_lpm, 0.0) / 60_000.0
    sensible = tab.cp_l_at(t_liq) * (t_sat - t_liq)  # kJ/kg to reach saturation
    if m > 0.0:
        quality = (heat_kw / m - sensible) / tab.h_lv_at(t_sat)
    else:
        quality = math.inf if heat_kw > 0.0 else 0.0
    superheat = t_out - t_sat
    if superheat > band_k or quality >= 1.0:
        phase = SUPERHEATED
    elif quality <= 0.0 and superheat < -band_k:
        phase = SUBCOOLED
    else:
        phase = TWO_PHASE
    return SaturationState(t_sat, superheat, t_sat - t_in, m, quality, phase)


class TwoPhaseBlock:
    """Control block of one pumped two-phase loop."""

    def __init__(self, config: TwoPhaseConfig, *, events: EventLog | None = None,
                 wall_offset: float = 0.0) -> None:
        self.config = c = config
        self.name = c.name
        self.table = table(c.refrigerant)
        self.events = events
        self.wall_offset = wall_offset
        # direct acting: pressure above setpoint opens the condenser; quality above target
        # speeds the liquid pump up
        self.pressure_pi = Pid(PidConfig(kp=c.kp_pct_per_bar, ti_s=c.ti_s,
                                         out_min=c.output_min_pct, out_max=c.output_max_pct,
                                         direct_acting=True),
                               setpoint=c.pressure_setpoint_bar, output=c.on_bad_output_pct)
        self.pump_pi = Pid(PidConfig(kp=c.pump_kp_pct, ti_s=c.pump_ti_s,
                                     out_min=c.pump_min_pct, out_max=100.0, direct_acting=True),
                           setpoint=c.quality_target, output=100.0)
        self.state: SaturationState | None = None
        self.alarms: set[str] = set()
        self.output_pct = c.on_bad_output_pct

    def _p_abs_kpa(self, bar: float) -> float:
        return bar * 100.0 + (101.325 if self.config.pressure_gauge else 0.0)

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Estimate, regulate, alarm."""
        c, p = self.config, self.config.points
        active: set[str] = set()
        pressure = image.value(p.pressure)
        t_in, t_out = image.value(p.inlet_temp), image.value(p.outlet_temp)
        flow, heat = image.value(p.flow), image.value(p.heat_kw)
        state: SaturationState | None = None
        if pressure is None:
            active.add("pressure_bad")
        else:
            if pressure > c.pressure_high_high_bar:
                active.add("pressure_high_high")
            elif pressure > c.pressure_max_bar:
                active.add("pressure_high")
            elif pressure < c.pressure_min_bar:
                active.add("pressure_low")
            if t_in is None or t_out is None or flow is None or heat is None:
                active.add("sensor_bad")
            else:
                try:
                    state = saturation_state(self.table, self._p_abs_kpa(pressure), t_in,
                                             t_out, flow, heat * c.heat_fraction, c.phase_band_k)
                except OutOfTable:
                    active.add("out_of_table")
        if state is not None:
            if state.superheat_k > c.superheat_alarm_k or state.quality > c.quality_max:
                active.add("dryout")
            if state.subcooling_k < c.subcooling_min_k:
                active.add("low_subcooling")
            self._publish(image, state, now)
        self.state = state

        # pressure regulation: direct acting (pressure above setpoint opens the condenser)
        if pressure is None:
            self.output_pct = c.on_bad_output_pct
            self.pressure_pi.track(self.output_pct)
        elif "pressure_high_high" in active:
            # The safety layer's rule drives the condenser full open (and wins over forces and
            # holds); the loop follows it so it takes over without a bump when it clears.
            self.output_pct = c.output_max_pct
            self.pressure_pi.track(self.output_pct, pressure)
        else:
            self.output_pct = self.pressure_pi.update(pressure, dt)
        image.write(p.output, self.output_pct)
        if p.pump:
            if state is None or not math.isfinite(state.quality):
                speed = 100.0  # unknown or no flow: full liquid flow is the safe side
                self.pump_pi.track(speed)
            else:
                speed = self.pump_pi.update(state.quality, dt)
            image.write(p.pump, speed)
        self._alarm(active, now)

    def _publish(self, image: ProcessImage, s: SaturationState, now: float) -> None:
        ts = now + self.wall_offset
        q = s.quality if math.isfinite(s.quality) else 99.0
        for key, value, unit in (("t_sat_c", s.t_sat_c, "degC"), ("quality", q, ""),
                                 ("superheat_k", s.superheat_k, "K"),
                                 ("subcooling_k", s.subcooling_k, "K"),
                                 ("phase", float(s.phase), ""),
                                 ("mass_flow_kg_s", s.mass_flow_kg_s, "kg/s")):
            image.derive(f"{self.name}.{key}", Sample(value, Quality.GOOD, ts), unit)

    _TEXT: ClassVar[dict[str, tuple[Severity, str]]] = {
        "pressure_bad": (Severity.ALARM, "loop pressure BAD: condenser output to safe value"),
        "pressure_high_high": (Severity.CRITICAL, "loop pressure high-high: condenser full"),
        "pressure_high": (Severity.ALARM, "loop pressure above its operating range"),
        "pressure_low": (Severity.WARNING, "loop pressure below its operating range"),
        "sensor_bad": (Severity.WARNING, "temperature, flow or heat input BAD: no quality"),
        "out_of_table": (Severity.ALARM, "pressure outside the refrigerant table"),
        "dryout": (Severity.ALARM, "evaporator dry-out risk: superheat or quality too high"),
        "low_subcooling": (Severity.WARNING, "liquid subcooling low: pump cavitation risk"),
    }

    def _alarm(self, active: set[str], now: float) -> None:
        if self.events is not None:
            ts = now + self.wall_offset
            for code in sorted(active - self.alarms):
                sev, text = self._TEXT[code]
                self.events.raise_event(ts, self.name, sev, text, f"two_phase_{code}")
            for code in sorted(self.alarms - active):
                self.events.raise_event(ts, self.name, Severity.INFO,
                                        f"cleared: {self._TEXT[code][1]}",
                                        f"two_phase_{code}_cleared")
        self.alarms = active

    def get_status(self) -> dict[str, Any]:
        """Saturation state, outputs and active alarms."""
        s = self.state
        return {"refrigerant": self.config.refrigerant, "output_pct": self.output_pct,
                "alarms": sorted(self.alarms),
                "t_sat_c": s.t_sat_c if s else None, "quality": s.quality if s else None,
                "phase": PHASES[s.phase] if s else None}


def load_two_phase(sec: Section, file: str, errors: ErrorLog) -> TwoPhaseConfig:
    """Read `[two_phase]`; every error names file, section and key."""
    d = TwoPhaseConfig()
    before = len(errors.lines)
    f = sec.get_float
    v: dict[str, Any] = {
        "name": sec.get_str("name", d.name),
        "refrigerant": sec.get_str("refrigerant", d.refrigerant, choices=list(FLUIDS)),
        "pressure_gauge": sec.get_bool("pressure_gauge", d.pressure_gauge),
    }
    for key, lo, hi in (("pressure_setpoint_bar", 0.0, 100.0), ("pressure_min_bar", 0.0, 100.0),
                        ("pressure_max_bar", 0.0, 100.0), ("pressure_high_high_bar", 0.0, 100.0),
                        ("output_min_pct", 0.0, 100.0), ("output_max_pct", 0.0, 100.0),
                        ("on_bad_output_pct", 0.0, 100.0), ("heat_fraction", 0.0, 1.0),
                        ("phase_band_k", 0.0, 10.0), ("superheat_alarm_k", 0.0, 50.0),
                        ("subcooling_min_k", 0.0, 50.0), ("quality_max", 0.0, 1.0),
                        ("quality_target", 0.0, 1.0), ("pump_min_pct", 0.0, 100.0)):
        v[key] = f(key, getattr(d, key), minval=lo, maxval=hi)
    for key in ("kp_pct_per_bar", "ti_s", "pump_kp_pct", "pump_ti_s"):
        v[key] = f(key, getattr(d, key), above=0.0)
    name = v["name"]
    if isinstance(name, str) and (not name or "." in name):
        sec.error("name", f"must be a plain name without dots, got {name!r}")
    order = ("pressure_min_bar", "pressure_setpoint_bar", "pressure_max_bar",
             "pressure_high_high_bar")
    vals = [v[k] for k in order]
    if all(isinstance(x, float) for x in vals):
        for (k1, a), (k2, b) in zip(zip(order, vals, strict=True),
                                    zip(order[1:], vals[1:], strict=True), strict=False):
            if not a < b:
                sec.error(k2, f"must be above {k1} ({a:g}), got {b:g}")
    if (isinstance(v["output_min_pct"], float) and isinstance(v["output_max_pct"], float)
            and v["output_min_pct"] >= v["output_max_pct"]):
        sec.error("output_max_pct", "must be above output_min_pct")
    names = read_points(sec, TwoPhasePoints(), ("pump",))
    sec.finish()
    if len(errors.lines) > before:
        return d
    return TwoPhaseConfig(**v, points=TwoPhasePoints(**names))


def build_two_phase_block(config: TwoPhaseConfig, *, events: EventLog | None = None,
                          wall_offset: float = 0.0) -> TwoPhaseBlock:
    """The control block for a loaded config."""
    return TwoPhaseBlock(config, events=events, wall_offset=wall_offset)
