"""The [control] section of a `cdu` node, read with bounds, and the blocks built from it.

    [control]
    feedforward = true                   # predictive preparation accepts announcements

    [control.supply_temp]                # PID on the facility-water valve
    sensor = "supply_temp.temperature"   # input, degC
    valve = "valve"                      # control_valve device (position_cmd, position_fb)
    setpoint_c = 30.0                    # Automatic setpoint
    setpoint_min_c = 15.0                # range for Override and setpoint commands
    setpoint_max_c = 45.0
    mode = "Automatic"                   # Automatic | Override | Manual | Disabled
    kp = 20.0                            # % valve per K (direct acting: hotter -> opens)
    ti_s = 10.0                          # integral time; td_s, derivative_filter_n, tt_s too
    rate_limit_pct_per_s = 10.0          # optional
    setpoint_ramp_per_s = 0.1            # K/s; a new setpoint or a return to automatic
                                         # starts from the measurement and ramps (no kick)
    valve_min_pct = 0.0                  # output limits
    valve_max_pct = 100.0
    valve_travel_s = 20.0                # feedback check: actuator model, tolerance, delay
    valve_tolerance_pct = 5.0
    valve_delay_s = 5.0

    [control.pumps]                      # speed PID on flow or dP, then staging
    pumps = ["pump1", "pump2"]           # cdu_pump_vfd devices
    control = "flow"                     # or "dp"
    flow_sensor = "flow.flow"            # L/min; needed for "flow" and for low-flow N+1
    # dp_sensors = ["supply_pressure.pressure", "return_pressure.pressure"]   # for "dp"
    setpoint = 160.0                     # L/min (flow) or bar (dp); setpoint_min/max
    mode = "Automatic"
    kp = 0.4                             # % speed per L/min (or per bar); ti_s = 1.0 ...
    rate_limit_pct_per_s = 20.0          # the VFD's ramp: the integrator knows about it
    duty = 1                             # N; the other pumps are standby
    max_running = 0                      # 0 = all may run on demand
    min_speed_pct = 20.0
    stage_up_pct = 95.0                  # stage_up_s, stage_down_pct, stage_down_s
    rotate_hours = 24.0                  # changeover_s
    low_flow_lpm = 50.0                  # low_flow_s = 0.5: standby starts within 1 s
    start_grace_s = 3.0                  # a pump's own start ramp is not low flow
    setpoint_ramp_per_s = 10.0           # optional (L/min/s): the valve keeps up with flow

    [control.preparation]                # heat estimate and announced loads (spec 6.3.1 a)
    return_sensor = "return_temp.temperature"
    return_volume_l = 25.0               # rack outlet -> heat exchanger
    rack_mass_kj_per_k = 120.0
    lead_s = 4.0                         # valve starts this much before the heat reaches the HX
    pump_lead_s = 1.0
    design_delta_t_k = 8.0               # optional: flow setpoint follows heat
    min_flow_lpm = 160.0                 # max_heat_kw, default_duration_s too
    max_flow_lpm = 190.0                 # what the lead pump alone moves (pump2 is N+1)
    [control.preparation.hx]             # design data: coolant_cp, coolant_density,
    hx_ua_kw_per_k = 25.0                # fw_temp_c, fw_max_flow_lpm, valve_characteristic,
                                         # valve_rangeability

Wiring (node builder, role "cdu"):
    errors = ErrorLog()
    cfg = load_cdu_control(data.get("control"), file, errors, inputs, outputs)
    errors.raise_if_any()
    blocks = build_cdu_blocks(cfg, events, wall=clock.wall, held=manual_outputs.manual)
    scan blocks: [manual_outputs, *blocks, ...], interlocks after them as usual.
Commands, applied at the start of a scan (each raises ValueError with the reason when
refused, and changes nothing; the command path audits and raises the event):
    "supply_temp" block  .set_mode(mode, value)  Override: degC setpoint, Manual: valve %
                         .set_setpoint(degC)  the Automatic setpoint
    "pumps" block        .set_mode(mode, value)  Override: L/min (or bar), Manual: speed %
                         .set_setpoint(L/min or bar)
                         .reset_faults()  .acknowledge_failover()
    "thermal_preparation" .announce(heat_announcement(msg, share=...))  .cancel(workload_id)
Every block has get_status().
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from edge_runtime.config.reader import ErrorLog, Section
from edge_runtime.control.modes import ControlMode, LoopMode, ModalPid, Range
from edge_runtime.control.pid import Pid, PidConfig
from edge_runtime.control.pumps import PumpControl, PumpStaging, StagingConfig
from edge_runtime.control.thermal import (
    HeatExchangerModel,
    PreparationConfig,
    SupplyTemperatureControl,
    ThermalPreparation,
)
from edge_runtime.control.valves import ValveChannel, ValveConfig
from edge_runtime.core.events import EventLog
from edge_runtime.core.scan import ControlBlock

MODES = [m.value for m in ControlMode]


@dataclass(frozen=True, slots=True)
class LoopConfig:
    """A PID loop with its mode and setpoint range."""

    pid: PidConfig
    setpoint: float
    setpoint_range: Range
    mode: ControlMode


@dataclass(frozen=True, slots=True)
class SupplyTempConfig:
    """[control.supply_temp]."""

    sensor: str
    valve: ValveConfig
    loop: LoopConfig


@dataclass(frozen=True, slots=True)
class PumpsConfig:
    """[control.pumps]."""

    staging: StagingConfig
    control: str  # "flow" | "dp"
    flow_sensor: str | None
    dp_sensors: tuple[str, str] | None
    loop: LoopConfig


@dataclass(frozen=True, slots=True)
class CduControlConfig:
    """The whole [control] section of a cdu node (parts absent when not configured)."""

    supply_temp: SupplyTempConfig | None = None
    pumps: PumpsConfig | None = None
    preparation: PreparationConfig | None = None
    feedforward: bool = True


def _pid(sec: Section, *, out: tuple[float, float], kp: float, ti_s: float,
         direct: bool, ramp: float | None = None) -> PidConfig | None:
    values: dict[str, Any] = {
        "kp": sec.get_float("kp", kp, above=0.0),
        "ti_s": sec.get_float("ti_s", ti_s, above=0.0),
        "td_s": sec.get_float("td_s", 0.0, minval=0.0, maxval=3600.0),
        "derivative_filter_n": sec.get_float("derivative_filter_n", 10.0, above=0.0),
        "tt_s": sec.get_float("tt_s", None, above=0.0),
        "rate_limit_per_s": sec.get_float("rate_limit_pct_per_s", None, above=0.0),
        "setpoint_ramp_per_s": sec.get_float("setpoint_ramp_per_s", ramp, above=0.0),
        "out_min": out[0], "out_max": out[1], "direct_acting": direct,
    }
    try:
        return PidConfig(**values)
    except ValueError as exc:  # bounds above catch most; this names what is left
        sec.error("(pid)", str(exc))
        return None


def _loop(sec: Section, pid: PidConfig | None, keys: tuple[str, str, str],
          defaults: tuple[float, float, float], unit: str) -> LoopConfig | None:
    sp_key, lo_key, hi_key = keys
    sp = sec.get_float(sp_key, defaults[0])
    lo = sec.get_float(lo_key, defaults[1])
    hi = sec.get_float(hi_key, defaults[2])
    mode = sec.get_str("mode", "Automatic", choices=MODES)
    if lo >= hi:
        sec.error(hi_key, f"must be above {lo_key} ({lo:g})")
        return None
    if not lo <= sp <= hi:
        sec.error(sp_key, f"{sp:g} {unit} outside {lo:g}..{hi:g} {unit}")
        return None
    if pid is None or mode not in MODES:
        return None
    return LoopConfig(pid, sp, Range(lo, hi, unit), ControlMode(mode))


class _Sec(Section):
    """Section plus a raw read for list values."""

    def get_raw(self, key: str) -> Any:
        """Any value or None when absent; marks the key read, the caller checks the type."""
        return self._get(key, None)


def _point(sec: Section, key: str, known: Collection[str], default: Any = None,
           what: str = "input") -> Any:
    name = sec.get_str(key, default)
    if isinstance(name, str) and name not in known:
        sec.error(key, f"unknown {what} {name!r}")
        return None
    return name


def _device_points(sec: Section, key: str, device: str, points: tuple[str, ...],
                   known: Collection[str]) -> bool:
    missing = [p for p in points if f"{device}.{p}" not in known]
    if missing:
        sec.error(key, f"{device!r} has no {', '.join(missing)} (needs points "
                       f"{', '.join(points)})")
        return False
    return True


def load_cdu_control(section: Mapping[str, Any] | None, file: str, errors: ErrorLog,
                     known_inputs: Collection[str],
                     known_outputs: Collection[str]) -> CduControlConfig:
    """Read [control]; every problem goes to `errors` as `file: [control.X] key: reason`."""
    top = Section(file, "control", dict(section or {}), errors)
    feedforward = top.get_bool("feedforward", True)
    supply = (_supply(top.sub("supply_temp"), known_inputs, known_outputs)
              if top.has("supply_temp") else None)
    pumps = (_pumps(_Sec(file, "control.pumps", top.table("pumps"), errors), known_inputs,
                    known_outputs)
             if top.has("pumps") else None)
    prep = None
    if top.has("preparation"):
        prep = _preparation(top.sub("preparation"), known_inputs, supply, pumps)
    top.finish()
    return CduControlConfig(supply, pumps, prep, bool(feedforward))


def _supply(sec: Section, inputs: Collection[str],
            outputs: Collection[str]) -> SupplyTempConfig | None:
    sensor = _point(sec, "sensor", inputs, "supply_temp.temperature")
    valve = sec.get_str("valve", "valve")
    vmin = sec.get_float("valve_min_pct", 0.0, minval=0.0, maxval=100.0)
    vmax = sec.get_float("valve_max_pct", 100.0, minval=0.0, maxval=100.0)
    if vmin >= vmax:
        sec.error("valve_max_pct", f"must be above valve_min_pct ({vmin:g})")
    pid = _pid(sec, out=(vmin, max(vmax, vmin + 1e-6)), kp=20.0, ti_s=10.0, direct=True,
               ramp=0.1)
    loop = _loop(sec, pid, ("setpoint_c", "setpoint_min_c", "setpoint_max_c"),
                 (30.0, 15.0, 45.0), "degC")
    vcfg = ValveConfig(
        device=valve if isinstance(valve, str) else "valve",
        travel_s=sec.get_float("valve_travel_s", 20.0, above=0.0, maxval=600.0),
        tolerance_pct=sec.get_float("valve_tolerance_pct", 5.0, above=0.0, maxval=100.0),
        delay_s=sec.get_float("valve_delay_s", 5.0, minval=0.0, maxval=600.0),
        check_feedback=sec.get_bool("valve_check_feedback", True))
    sec.finish()
    ok = (_device_points(sec, "valve", vcfg.device, ("position_cmd",), outputs)
          and _device_points(sec, "valve", vcfg.device, ("position_fb", "status"), inputs))
    if sensor is None or loop is None or not ok:
        return None
    return SupplyTempConfig(sensor, vcfg, loop)


def _pumps(sec: _Sec, inputs: Collection[str], outputs: Collection[str]) -> PumpsConfig | None:
    raw = sec.get_raw("pumps")
    names: list[str] = []
    if not isinstance(raw, list) or not raw or not all(isinstance(p, str) for p in raw) \
            or len(set(raw)) != len(raw):
        sec.error("pumps", f"required: a list of distinct pump device names, got {raw!r}")
    else:
        names = raw
        for p in names:
            _device_points(sec, "pumps", p, ("control_word", "speed_ref"), outputs)
            _device_points(sec, "pumps", p, ("status_word", "run_hours", "fault_code"), inputs)
    control = sec.get_str("control", "flow", choices=("flow", "dp"))
    flow_sensor = _point(sec, "flow_sensor", inputs, "flow.flow" if control == "flow" else None)
    dp_raw = sec.get_raw("dp_sensors")
    dp: tuple[str, str] | None = None
    if control == "dp":
        if (not isinstance(dp_raw, list) or len(dp_raw) != 2
                or not all(isinstance(p, str) and p in inputs for p in dp_raw)):
            sec.error("dp_sensors", f"needs two known pressure inputs [supply, return], "
                                    f"got {dp_raw!r}")
        else:
            dp = (dp_raw[0], dp_raw[1])
    elif dp_raw is not None:
        sec.error("dp_sensors", "only with control = \"dp\"")
    min_speed = sec.get_float("min_speed_pct", 20.0, minval=0.0, maxval=100.0)
    pid = _pid(sec, out=(0.0, 100.0), kp=0.4, ti_s=1.0, direct=False)
    unit = "L/min" if control == "flow" else "bar"
    hi = 5000.0 if control == "flow" else 10.0
    loop = _loop(sec, pid, ("setpoint", "setpoint_min", "setpoint_max"),
                 (180.0 if control == "flow" else 1.5, 0.0, hi), unit)
    duty = sec.get_int("duty", 1, minval=1, maxval=max(len(names), 1))
    staging = StagingConfig(
        pumps=tuple(names), duty=duty,
        max_running=sec.get_int("max_running", 0, minval=0, maxval=max(len(names), 1)),
        min_speed_pct=min_speed,
        stage_up_pct=sec.get_float("stage_up_pct", 95.0, minval=0.0, maxval=100.0),
        stage_up_s=sec.get_float("stage_up_s", 10.0, minval=0.0, maxval=3600.0),
        stage_down_pct=sec.get_float("stage_down_pct", 45.0, minval=0.0, maxval=100.0),
        stage_down_s=sec.get_float("stage_down_s", 60.0, minval=0.0, maxval=3600.0),
        rotate_hours=sec.get_float("rotate_hours", 24.0, minval=0.0),
        changeover_s=sec.get_float("changeover_s", 5.0, minval=0.0, maxval=600.0),
        low_flow_lpm=sec.get_float("low_flow_lpm", None, above=0.0),
        low_flow_s=sec.get_float("low_flow_s", 0.5, minval=0.0, maxval=0.9),
        start_grace_s=sec.get_float("start_grace_s", 3.0, minval=0.0, maxval=60.0))
    sec.finish()
    if staging.stage_down_pct >= staging.stage_up_pct:
        sec.error("stage_down_pct", f"must be below stage_up_pct ({staging.stage_up_pct:g})")
    if staging.max_running and staging.max_running < duty:
        sec.error("max_running", f"must be at least duty ({duty})")
    if staging.low_flow_lpm is not None and flow_sensor is None:
        sec.error("low_flow_lpm", "needs flow_sensor")
    if control == "flow" and flow_sensor is None:
        sec.error("flow_sensor", "required with control = \"flow\"")
    if not names or loop is None or (control == "dp" and dp is None):
        return None
    return PumpsConfig(staging, control, flow_sensor, dp, loop)


def _preparation(sec: Section, inputs: Collection[str], supply: SupplyTempConfig | None,
                 pumps: PumpsConfig | None) -> PreparationConfig | None:
    ret = _point(sec, "return_sensor", inputs, "return_temp.temperature")
    flow = pumps.flow_sensor if pumps is not None else None
    flow = _point(sec, "flow_sensor", inputs, flow)
    hx_sec = sec.sub("hx")
    d = HeatExchangerModel()
    model = HeatExchangerModel(
        coolant_cp=hx_sec.get_float("coolant_cp", d.coolant_cp, above=0.0),
        coolant_density=hx_sec.get_float("coolant_density", d.coolant_density, above=0.0),
        hx_ua_kw_per_k=hx_sec.get_float("hx_ua_kw_per_k", d.hx_ua_kw_per_k, above=0.0),
        fw_temp_c=hx_sec.get_float("fw_temp_c", d.fw_temp_c, minval=-10.0, maxval=100.0),
        fw_max_flow_lpm=hx_sec.get_float("fw_max_flow_lpm", d.fw_max_flow_lpm, above=0.0),
        valve_characteristic=hx_sec.get_str("valve_characteristic", d.valve_characteristic,
                                            choices=("equal_percentage", "linear")),
        valve_rangeability=hx_sec.get_float("valve_rangeability", d.valve_rangeability,
                                            above=1.0))
    hx_sec.finish()
    travel = supply.valve.travel_s if supply is not None else 20.0
    values: dict[str, Any] = {
        "return_volume_l": sec.get_float("return_volume_l", 25.0, above=0.0),
        "rack_mass_kj_per_k": sec.get_float("rack_mass_kj_per_k", 120.0, above=0.0),
        "lead_s": sec.get_float("lead_s", 4.0, minval=0.0, maxval=600.0),
        "pump_lead_s": sec.get_float("pump_lead_s", 1.0, minval=0.0, maxval=600.0),
        "design_delta_t_k": sec.get_float("design_delta_t_k", None, above=0.0, maxval=50.0),
        "min_flow_lpm": sec.get_float("min_flow_lpm", 0.0, minval=0.0),
        "max_flow_lpm": sec.get_float("max_flow_lpm", 1.0e9, above=0.0),
        "max_heat_kw": sec.get_float("max_heat_kw", 1.0e6, above=0.0),
        "default_duration_s": sec.get_float("default_duration_s", 900.0, above=0.0),
        "heat_filter_s": sec.get_float("heat_filter_s", 5.0, above=0.0, maxval=600.0),
    }
    sec.finish()
    if supply is None:
        sec.error("(section)", "needs [control.supply_temp] (the valve it pre-positions)")
        return None
    if flow is None:
        sec.error("flow_sensor", "required (or [control.pumps] flow_sensor)")
    if values["min_flow_lpm"] > values["max_flow_lpm"]:
        sec.error("max_flow_lpm", "must be at least min_flow_lpm")
    if ret is None or flow is None:
        return None
    return PreparationConfig(supply_point=supply.sensor, return_point=ret, flow_point=flow,
                             model=model, valve_rate_pct_per_s=100.0 / travel, **values)


def build_cdu_blocks(cfg: CduControlConfig, events: EventLog, *, wall: Callable[[], float],
                     held: Mapping[str, float] | None = None) -> list[ControlBlock]:
    """The CDU's blocks in scan order: preparation, pumps, supply temperature.

    `held` is the command path's operator-held outputs (ManualOutputs.manual): the blocks
    never overwrite a held output and follow it, so releasing it is bumpless.
    """
    blocks: list[ControlBlock] = []
    prep = None
    if cfg.preparation is not None:
        prep = ThermalPreparation(cfg.preparation, events, wall, enabled=cfg.feedforward)
        blocks.append(prep)
    if cfg.pumps is not None:
        p = cfg.pumps
        mode = LoopMode("pumps", setpoint=p.loop.setpoint, setpoint_range=p.loop.setpoint_range,
                        output_range=Range(0.0, 100.0, "%"), mode=p.loop.mode)
        blocks.append(PumpControl(
            staging=PumpStaging(p.staging, events, wall),
            loop=ModalPid(Pid(p.loop.pid, setpoint=p.loop.setpoint, output=100.0), mode),
            flow_point=p.flow_sensor, dp_points=p.dp_sensors, events=events,
            feedforward=prep, held=held))
    if cfg.supply_temp is not None:
        s = cfg.supply_temp
        mode = LoopMode("supply_temp", setpoint=s.loop.setpoint,
                        setpoint_range=s.loop.setpoint_range,
                        output_range=Range(s.loop.pid.out_min, s.loop.pid.out_max, "%"),
                        mode=s.loop.mode)
        blocks.append(SupplyTemperatureControl(
            loop=ModalPid(Pid(s.loop.pid, setpoint=s.loop.setpoint, output=100.0), mode),
            valve=ValveChannel(s.valve, events, wall), supply_point=s.sensor,
            preparation=prep, held=held))
    return blocks
