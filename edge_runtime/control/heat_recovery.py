"""Heat recovery into a district-heating network (spec 6.3.2, 9.2): supply 70-90 degC +-2 K.

Two ways to the network, chosen from the source (data-centre loop) temperature with a
hysteresis band:
- direct: source >= setpoint + approach_k (+ hysteresis to enter): exchanger only, the heat
  pump off;
- heat_pump: the loop is cooler than the network needs: the heat pump compressor runs at the
  share of its rating that matches the heat the loop offers (capture_fraction x IT power,
  low-passed over ff_tau_s), and lifts it; its COP is estimated as a Carnot fraction,
      COP = carnot_fraction x T_cond / (T_cond - T_evap),  T_cond = setpoint + 3 K,
      T_evap = source - 5 K (kelvin),
  and delivered heat = source heat x COP / (COP - 1).
In both modes the network pump holds the supply temperature: a feedforward flow
(expected heat / (rho cp (setpoint - return))) plus a PI trim on the supply error
(edge_runtime.control.pid: anti-windup, bumpless tracking).
Metering: a ThermalEnergyMeter on the network side integrates rho V cp dT (energy_meter.py).
Recovery efficiency = data-centre heat recovered (delivered heat - compressor energy, the
compressor energy measured when a `compressor_kw` point is given, else estimated from the
COP) / IT energy; the spec's goal is >= 60 %.
Alarms (EventLog, raised once, cleared once): heat_quality (supply outside setpoint +-
tolerance_k for longer than quality_delay_s), contamination_risk (network pressure not above
the loop's by min_dp_bar, so an exchanger leak would push loop fluid into the network),
sensor_bad, fluid_range.
Derived inputs: `<name>.heat_kw`, `.energy_kwh`, `.cop`, `.recovery_efficiency_pct`,
`.mode` (1 direct, 2 heat pump), `.compressor_kwh`.

TOML shape:

    [heat_recovery]
    name = "heat_recovery"
    supply_setpoint_c = 75.0        # 70..90 (spec 6.3.2 b)
    tolerance_k = 2.0
    quality_delay_s = 60.0
    approach_k = 3.0
    mode_hysteresis_k = 2.0
    capture_fraction = 0.8          # share of IT power the liquid loop carries
    hp_source_max_kw = 1000.0       # heat the heat pump can take from the loop at 100 %
    carnot_fraction = 0.5
    flow_max_lpm = 2000.0           # network pump at 100 %
    fluid = "water"                 # or "pg32" (<= 40 degC only)
    flow_at_supply = false          # where the flow meter sits
    kp_pct_per_k = 0.5              # network pump PI trim (direct acting)
    ti_s = 20.0
    pump_min_pct = 5.0
    ff_tau_s = 30.0                 # about the loop's thermal time constant
    min_dp_bar = 0.2
    [heat_recovery.points]
    supply_temp = "dh_supply_temp.temperature"
    return_temp = "dh_return_temp.temperature"
    flow = "dh_flow.flow"
    source_temp = "loop_return_temp.temperature"
    it_power = "rack_meter.power_kw"
    pump = "dh_pump.speed_ref"
    heat_pump = "heat_pump.speed_ref"
    compressor_kw = ""              # e.g. "heat_pump.motor_power"; "" = estimate from COP
    dh_pressure = ""                # both set: contamination check
    loop_pressure = ""

Wiring (cdu or site role): `cfg = load_heat_recovery(Section(file, "heat_recovery",
data["heat_recovery"], errors), file, errors)`; `build_heat_recovery_block(cfg,
events=engine.events)` after the thermal blocks. The heat pump is a compressor VFD
(io_map cdu_pump_vfd: speed_ref, motor_power); its run command (control_word) stays with
the pump logic or a fixed value in the node config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from edge_runtime.config.devices import read_points
from edge_runtime.config.reader import ErrorLog, Section
from edge_runtime.control.energy_meter import FLUID_TABLES, FluidRangeError, ThermalEnergyMeter
from edge_runtime.control.pid import Pid, PidConfig
from edge_runtime.core.events import EventLog, Severity
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality, Sample

DIRECT, HEAT_PUMP = 1, 2


@dataclass(frozen=True, slots=True)
class HeatRecoveryPoints:
    """Image points of the block ("" = not fitted)."""

    supply_temp: str = "dh_supply_temp.temperature"
    return_temp: str = "dh_return_temp.temperature"
    flow: str = "dh_flow.flow"
    source_temp: str = "loop_return_temp.temperature"
    it_power: str = "rack_meter.power_kw"
    pump: str = "dh_pump.speed_ref"
    heat_pump: str = "heat_pump.speed_ref"
    compressor_kw: str = ""
    dh_pressure: str = ""
    loop_pressure: str = ""


OPTIONAL_POINTS = ("compressor_kw", "dh_pressure", "loop_pressure")


@dataclass(frozen=True, slots=True)
class HeatRecoveryConfig:
    """Heat recovery settings."""

    name: str = "heat_recovery"
    supply_setpoint_c: float = 75.0
    tolerance_k: float = 2.0
    quality_delay_s: float = 60.0
    approach_k: float = 3.0
    mode_hysteresis_k: float = 2.0
    capture_fraction: float = 0.8
    hp_source_max_kw: float = 1000.0
    carnot_fraction: float = 0.5
    flow_max_lpm: float = 2000.0
    fluid: str = "water"
    flow_at_supply: bool = False
    kp_pct_per_k: float = 0.5
    ti_s: float = 20.0
    pump_min_pct: float = 5.0
    ff_tau_s: float = 30.0
    min_dp_bar: float = 0.2
    points: HeatRecoveryPoints = field(default_factory=HeatRecoveryPoints)


def carnot_cop(fraction: float, t_cond_c: float, t_evap_c: float) -> float:
    """Heat-pump COP as a fraction of the Carnot COP between two temperatures (degC)."""
    t_cond = t_cond_c + 273.15
    lift = max(t_cond_c - t_evap_c, 1.0)
    return fraction * t_cond / lift


class HeatRecoveryBlock:
    """District-heat supply control, heat-pump staging, metering and efficiency."""

    def __init__(self, config: HeatRecoveryConfig, *, events: EventLog | None = None,
                 wall_offset: float = 0.0) -> None:
        self.config = c = config
        self.name = c.name
        self.events = events
        self.wall_offset = wall_offset
        self.meter = ThermalEnergyMeter(FLUID_TABLES[c.fluid], c.flow_at_supply)
        # direct acting: a supply above setpoint calls for more network flow
        self.pid = Pid(PidConfig(kp=c.kp_pct_per_k, ti_s=c.ti_s, out_min=c.pump_min_pct,
                                 out_max=100.0, direct_acting=True),
                       setpoint=c.supply_setpoint_c, output=100.0)
        self.mode = DIRECT
        self.cop = 0.0
        self.pump_pct = 100.0
        self.hp_pct = 0.0
        self.it_kwh = 0.0
        self.compressor_kwh = 0.0
        self.alarms: set[str] = set()
        self._it_lp: float | None = None
        self._off_band_s = 0.0

    @property
    def recovery_efficiency_pct(self) -> float:
        """Data-centre heat recovered / IT energy, in %."""
        if self.it_kwh <= 0.0:
            return 0.0
        return 100.0 * max(self.meter.energy_kwh - self.compressor_kwh, 0.0) / self.it_kwh

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        """Pick the mode, drive the heat pump and the network pump, meter, alarm."""
        c, p = self.config, self.config.points
        active: set[str] = set()
        t_s, t_r = image.value(p.supply_temp), image.value(p.return_temp)
        flow, t_src, it = image.value(p.flow), image.value(p.source_temp), image.value(p.it_power)
        if it is not None:
            self.it_kwh += max(it, 0.0) * dt / 3600.0
            a = dt / (c.ff_tau_s + dt) if c.ff_tau_s > 0 else 1.0
            self._it_lp = it if self._it_lp is None else self._it_lp + (it - self._it_lp) * a
        try:
            heat = self.meter.step(flow, t_s, t_r, dt)
        except FluidRangeError:
            heat = None
            active.add("fluid_range")
        if None in (t_s, t_r, flow, t_src, it):
            active.add("sensor_bad")
        self._select_mode(t_src)
        offered = c.capture_fraction * max(self._it_lp or 0.0, 0.0)
        if self.mode == HEAT_PUMP and t_src is not None:
            self.cop = carnot_cop(c.carnot_fraction, c.supply_setpoint_c + 3.0, t_src - 5.0)
            source = min(offered, c.hp_source_max_kw)
            self.hp_pct = 100.0 * source / c.hp_source_max_kw
            expected = source * self.cop / max(self.cop - 1.0, 0.1)
        else:
            self.cop, self.hp_pct, expected = 0.0, 0.0, offered
        self._pump(t_s, t_r, expected, dt)
        self._compressor(image, heat, dt)
        if t_s is not None and abs(t_s - c.supply_setpoint_c) > c.tolerance_k:
            self._off_band_s += dt
        else:
            self._off_band_s = 0.0
        if self._off_band_s > c.quality_delay_s:
            active.add("heat_quality")
        if p.dh_pressure and p.loop_pressure:
            dh, loop = image.value(p.dh_pressure), image.value(p.loop_pressure)
            if dh is None or loop is None or dh - loop < c.min_dp_bar:
                active.add("contamination_risk")
        image.write(p.pump, self.pump_pct)
        if p.heat_pump:
            image.write(p.heat_pump, self.hp_pct)
        self._publish(image, now)
        self._alarm(active, now)

    def _select_mode(self, t_src: float | None) -> None:
        c = self.config
        if t_src is None:
            return  # keep the mode: a lost sensor must not cycle the compressor
        threshold = c.supply_setpoint_c + c.approach_k
        if self.mode == DIRECT and t_src < threshold:
            self.mode = HEAT_PUMP
        elif self.mode == HEAT_PUMP and t_src >= threshold + c.mode_hysteresis_k:
            self.mode = DIRECT

    def _pump(self, t_s: float | None, t_r: float | None, expected_kw: float,
              dt: float) -> None:
        c = self.config
        if t_s is None or t_r is None:
            self.pump_pct = 100.0  # unknown supply: full flow keeps it from overheating
            self.pid.track(self.pump_pct)
            return
        lift = max(c.supply_setpoint_c - t_r, 1.0)
        fl = self.meter.fluid
        try:
            kg_s = expected_kw / (fl.cp_kj_kg_k((t_r + c.supply_setpoint_c) / 2.0) * lift)
            ff = 100.0 * kg_s / fl.rho_kg_m3(t_r) * 60_000.0 / c.flow_max_lpm
        except FluidRangeError:
            ff = 100.0
        # the PID's anti-windup covers the feedforward too: no wind-up against the pump limits
        self.pump_pct = self.pid.update(t_s, dt, ff=ff)

    def _compressor(self, image: ProcessImage, heat: float | None, dt: float) -> None:
        point = self.config.points.compressor_kw
        measured = image.value(point) if point else None
        if measured is not None:
            self.compressor_kwh += max(measured, 0.0) * dt / 3600.0
        elif self.mode == HEAT_PUMP and heat is not None and self.cop > 1.0:
            self.compressor_kwh += max(heat, 0.0) / self.cop * dt / 3600.0

    def _publish(self, image: ProcessImage, now: float) -> None:
        ts = now + self.wall_offset
        for key, value, unit in (("heat_kw", self.meter.power_kw, "kW"),
                                 ("energy_kwh", self.meter.energy_kwh, "kWh"),
                                 ("cop", self.cop, ""),
                                 ("recovery_efficiency_pct", self.recovery_efficiency_pct, "%"),
                                 ("mode", float(self.mode), ""),
                                 ("compressor_kwh", self.compressor_kwh, "kWh")):
            image.derive(f"{self.name}.{key}", Sample(value, Quality.GOOD, ts), unit)

    _TEXT: ClassVar[dict[str, tuple[Severity, str]]] = {
        "heat_quality": (Severity.ALARM, "district-heat supply outside setpoint +- tolerance"),
        "contamination_risk": (Severity.ALARM, "network pressure not above the loop's: a "
                                               "leak would contaminate the network"),
        "sensor_bad": (Severity.WARNING, "a heat-recovery input is BAD: metering paused"),
        "fluid_range": (Severity.ALARM, "temperature outside the fluid's property table"),
    }

    def _alarm(self, active: set[str], now: float) -> None:
        if self.events is not None:
            ts = now + self.wall_offset
            for code in sorted(active - self.alarms):
                sev, text = self._TEXT[code]
                self.events.raise_event(ts, self.name, sev, text, f"heat_recovery_{code}")
            for code in sorted(self.alarms - active):
                self.events.raise_event(ts, self.name, Severity.INFO,
                                        f"cleared: {self._TEXT[code][1]}",
                                        f"heat_recovery_{code}_cleared")
        self.alarms = active

    def get_status(self) -> dict[str, Any]:
        """Mode, outputs, metering and efficiency."""
        return {"mode": "heat_pump" if self.mode == HEAT_PUMP else "direct",
                "pump_pct": self.pump_pct, "heat_pump_pct": self.hp_pct, "cop": self.cop,
                "heat_kw": self.meter.power_kw, "energy_kwh": self.meter.energy_kwh,
                "missing_s": self.meter.missing_s, "it_kwh": self.it_kwh,
                "recovery_efficiency_pct": self.recovery_efficiency_pct,
                "alarms": sorted(self.alarms)}


def load_heat_recovery(sec: Section, file: str, errors: ErrorLog) -> HeatRecoveryConfig:
    """Read `[heat_recovery]`; every error names file, section and key."""
    d = HeatRecoveryConfig()
    before = len(errors.lines)
    f = sec.get_float
    v: dict[str, Any] = {
        "name": sec.get_str("name", d.name),
        "fluid": sec.get_str("fluid", d.fluid, choices=list(FLUID_TABLES)),
        "flow_at_supply": sec.get_bool("flow_at_supply", d.flow_at_supply),
        "supply_setpoint_c": f("supply_setpoint_c", d.supply_setpoint_c, minval=70.0,
                               maxval=90.0),
        "tolerance_k": f("tolerance_k", d.tolerance_k, above=0.0, maxval=10.0),
        "quality_delay_s": f("quality_delay_s", d.quality_delay_s, minval=0.0),
        "approach_k": f("approach_k", d.approach_k, minval=0.0, maxval=30.0),
        "mode_hysteresis_k": f("mode_hysteresis_k", d.mode_hysteresis_k, minval=0.0,
                               maxval=20.0),
        "capture_fraction": f("capture_fraction", d.capture_fraction, above=0.0, maxval=1.0),
        "hp_source_max_kw": f("hp_source_max_kw", d.hp_source_max_kw, above=0.0),
        "carnot_fraction": f("carnot_fraction", d.carnot_fraction, above=0.0, maxval=1.0),
        "flow_max_lpm": f("flow_max_lpm", d.flow_max_lpm, above=0.0),
        "kp_pct_per_k": f("kp_pct_per_k", d.kp_pct_per_k, above=0.0),
        "ti_s": f("ti_s", d.ti_s, above=0.0),
        "pump_min_pct": f("pump_min_pct", d.pump_min_pct, minval=0.0, maxval=100.0),
        "ff_tau_s": f("ff_tau_s", d.ff_tau_s, minval=0.0),
        "min_dp_bar": f("min_dp_bar", d.min_dp_bar, minval=0.0),
    }
    name = v["name"]
    if isinstance(name, str) and (not name or "." in name):
        sec.error("name", f"must be a plain name without dots, got {name!r}")
    names = read_points(sec, HeatRecoveryPoints(), (*OPTIONAL_POINTS, "heat_pump"))
    if bool(names.get("dh_pressure")) != bool(names.get("loop_pressure")):
        sec.errors.add(sec.file, "heat_recovery.points", "loop_pressure",
                       "dh_pressure and loop_pressure go together")
    sec.finish()
    if len(errors.lines) > before:
        return d
    return HeatRecoveryConfig(**v, points=HeatRecoveryPoints(**names))


def build_heat_recovery_block(config: HeatRecoveryConfig, *, events: EventLog | None = None,
                              wall_offset: float = 0.0) -> HeatRecoveryBlock:
    """The control block for a loaded config."""
    return HeatRecoveryBlock(config, events=events, wall_offset=wall_offset)

