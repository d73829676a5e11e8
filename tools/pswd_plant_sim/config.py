"""Load a plant-simulator TOML config; every error reads `file: [section] key: reason`.

Sections: [sim], [trace], [loop], [battery], [meter], [two_phase], [district_heat],
[endpoints.NAME], [devices.NAME], [[faults]]. Physical sections are optional (defaults suit a
~120 kW rack; without [two_phase] / [district_heat] there is no such element); every key is
bounded and unknown keys are rejected, as in the node configs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edge_runtime.config.iomap import default_io_maps_dir, load_io_map
from edge_runtime.config.reader import ConfigError, ErrorLog, Section, read_toml
from edge_runtime.config.schema import IoMap
from edge_runtime.control.refrigerants import FLUIDS
from pswd_plant_sim.battery import BatteryConfig
from pswd_plant_sim.devices import EXCLUSIVE_BINDS, bind_error
from pswd_plant_sim.district_heat import DistrictHeatConfig
from pswd_plant_sim.faults import FaultKind, FaultSpec
from pswd_plant_sim.heat_plants import DistrictHeatSetup, TwoPhaseSetup
from pswd_plant_sim.loop import LoopConfig
from pswd_plant_sim.model import MeterConfig, PlantConfig
from pswd_plant_sim.opcua_device import (
    SECURITY,
    SIMULATED_BY,
    OpcUaDeviceSpec,
    OpcUaEndpointSpec,
    backing_error,
)
from pswd_plant_sim.rig import DeviceSpec, fault_error
from pswd_plant_sim.server import EndpointSpec
from pswd_plant_sim.trace import TraceConfig
from pswd_plant_sim.two_phase_loop import TwoPhaseLoopConfig

__all__ = ["ConfigError", "SimConfig", "load_sim_config"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
D = TypeVar("D")
Bounds = Mapping[str, tuple[float | None, float | None]]

# (min, max) of every numeric option; strings are listed in _CHOICES
_TRACE_BOUNDS: Bounds = {
    "rack_kw": (1.0, 10_000.0), "site_mw": (0.001, 10_000.0), "iter_hz_min": (0.2, 3.0),
    "iter_hz_max": (0.2, 3.0), "duty": (0.1, 0.9), "high_frac": (0.1, 1.5),
    "low_frac": (0.0, 1.5), "idle_frac": (0.0, 1.5), "edge_s": (0.001, 1.0),
    "checkpoint_every_s": (1.0, 86_400.0), "checkpoint_s": (0.1, 3600.0),
    "jitter": (0.0, 0.9), "noise_frac": (0.0, 0.5), "noise_dt": (0.001, 10.0),
}
_LOOP_BOUNDS: Bounds = {
    "pumps": (1, 16), "pump_shutoff_head_bar": (0.1, 30.0), "pump_max_flow_lpm": (1.0, 1e6),
    "pump_efficiency": (0.05, 1.0), "motor_efficiency": (0.05, 1.0),
    "pump_ramp_pct_per_s": (0.1, 1000.0), "system_head_bar": (0.01, 30.0),
    "system_flow_lpm": (1.0, 1e6), "static_pressure_bar": (0.0, 20.0),
    "return_pressure_frac": (0.0, 1.0), "coolant_cp": (1000.0, 5000.0),
    "coolant_density": (500.0, 2000.0), "rack_mass_kj_per_k": (1.0, 1e7),
    "cdu_mass_kj_per_k": (1.0, 1e7), "supply_pipe_l": (0.01, 1e6), "return_pipe_l": (0.01, 1e6),
    "hx_ua_kw_per_k": (0.01, 1e6), "fw_temp_c": (0.0, 60.0), "fw_max_flow_lpm": (0.0, 1e6),
    "valve_rangeability": (2.0, 500.0), "valve_travel_s": (0.1, 600.0),
    "initial_valve_pct": (0.0, 100.0), "initial_temp_c": (0.0, 90.0),
    "leak_cable_m": (1.0, 6553.0), "throttle_start_c": (20.0, 120.0),
    "throttle_stop_c": (20.0, 150.0),
}
_BATTERY_BOUNDS: Bounds = {
    "capacity_kwh": (0.1, 1e7), "max_charge_kw": (0.0, 6500.0),
    "max_discharge_kw": (0.0, 6500.0), "efficiency": (0.5, 1.0),
    "ramp_kw_per_s": (0.1, 1e7), "initial_soc_pct": (0.0, 100.0), "soc_min_pct": (0.0, 100.0),
    "soc_max_pct": (0.0, 100.0), "soh_pct": (0.0, 100.0), "nominal_v": (1.0, 2000.0),
    "hb_timeout_s": (0.1, 3600.0),
}
_METER_BOUNDS: Bounds = {"voltage_v": (100.0, 1000.0), "frequency_hz": (45.0, 65.0)}
_TWO_PHASE_BOUNDS: Bounds = {
    "thermal_mass_kj_per_k": (1.0, 1e7), "ua_max_kw_per_k": (0.01, 1e6), "water_c": (0.0, 60.0),
    "subcool_k": (0.0, 30.0), "flow_max_lpm": (0.1, 1e6), "initial_t_sat_c": (-20.0, 80.0),
    "pressure_noise_bar": (0.0, 1.0), "temp_noise_c": (0.0, 5.0),
    "heat_fraction": (0.0, 1.0), "pump_pct": (0.0, 100.0), "valve_travel_s": (0.1, 600.0),
    "initial_valve_pct": (0.0, 100.0),
}
_DISTRICT_HEAT_BOUNDS: Bounds = {
    "capture_fraction": (0.0, 1.0), "loop_tau_s": (0.0, 3600.0), "source_c": (10.0, 120.0),
    "dh_return_c": (5.0, 90.0), "approach_k": (0.0, 30.0), "flow_max_lpm": (1.0, 1e6),
    "hp_source_max_kw": (0.1, 1e7), "carnot_fraction": (0.05, 1.0), "lag_s": (0.1, 3600.0),
    "temp_noise_c": (0.0, 5.0), "flow_noise_frac": (0.0, 0.5),
    "pump_pct": (0.0, 100.0), "hp_pct": (0.0, 100.0), "ramp_pct_per_s": (0.1, 1000.0),
}
_CHOICES = {"valve_characteristic": ("equal_percentage", "linear"),
            "refrigerant": tuple(FLUIDS)}
_FAULT_KINDS = [k.value for k in FaultKind]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """A whole simulated plant: physics, timing, endpoints, devices and scheduled faults."""

    plant: PlantConfig
    step_s: float
    realtime: bool
    endpoints: tuple[EndpointSpec, ...]
    devices: tuple[DeviceSpec, ...]
    faults: tuple[FaultSpec, ...]
    source: Path | None = None
    opcua: tuple[OpcUaDeviceSpec, ...] = ()  # devices served over OPC UA instead of Modbus


def _read_fields(sec: Section, cls: type[D], bounds: Bounds, skip: tuple[str, ...] = ()) -> D:
    """Build a frozen config dataclass from a section, every field optional and bounded."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in skip:
            continue
        default = f.default
        lo, hi = bounds.get(f.name, (None, None))
        if f.name in _CHOICES:
            values[f.name] = sec.get_str(f.name, default, choices=_CHOICES[f.name])
        elif isinstance(default, bool):
            values[f.name] = sec.get_bool(f.name, default)
        elif isinstance(default, int):
            values[f.name] = sec.get_int(f.name, default, minval=None if lo is None else int(lo),
                                         maxval=None if hi is None else int(hi))
        else:
            values[f.name] = sec.get_float(f.name, default, minval=lo, maxval=hi)
    sec.finish()
    return cls(**values)


def load_sim_config(path: Path | str) -> SimConfig:
    """Read and check a simulator config; ConfigError lists every problem found."""
    path = Path(path)
    errors = ErrorLog()
    data = read_toml(path, errors)
    errors.raise_if_any()
    assert data is not None
    config = build_sim_config(data, str(path), path.parent, errors)
    errors.raise_if_any()
    return dataclasses.replace(config, source=path)


def build_sim_config(data: Mapping[str, Any], file: str, base_dir: Path,
                     errors: ErrorLog) -> SimConfig:
    """Check a parsed config (also used by tests with inline dicts); problems go to errors."""
    body = dict(data)
    faults_raw = body.pop("faults", [])  # an array of tables, not a table: read separately
    top = Section(file, "", body, errors)
    sim = top.sub("sim")
    step_ms = sim.get_float("step_ms", 100.0, minval=1.0, maxval=10_000.0)
    realtime = sim.get_bool("realtime", True)
    seed = sim.get_int("seed", 1, minval=0, maxval=2**63 - 1)
    maps_raw = sim.get_str("io_maps_dir", None)
    sim.finish()
    maps_dir = (base_dir / maps_raw).resolve() if maps_raw else default_io_maps_dir()

    tsec = top.sub("trace")
    pattern = tsec.get_str("pattern", "training", choices=("training", "constant"))
    constant_frac = tsec.get_float("constant_frac", 0.8, minval=0.0, maxval=1.5)
    edge_ms = tsec.get_float("edge_ms", 40.0, minval=1.0, maxval=1000.0)
    site_mw = tsec.get_float("site_mw", None, minval=0.001, maxval=10_000.0)
    trace = _read_fields(tsec, TraceConfig, _TRACE_BOUNDS, skip=("seed", "edge_s", "site_mw"))
    trace = dataclasses.replace(trace, seed=seed, edge_s=edge_ms / 1000.0, site_mw=site_mw)
    if trace.iter_hz_min > trace.iter_hz_max:
        tsec.error("iter_hz_min", f"must be <= iter_hz_max ({trace.iter_hz_max:g})")

    lsec = top.sub("loop")
    loop = _read_fields(lsec, LoopConfig, _LOOP_BOUNDS)
    if loop.throttle_start_c >= loop.throttle_stop_c:
        lsec.error("throttle_start_c", "must be < throttle_stop_c")
    bsec = top.sub("battery")
    battery = _read_fields(bsec, BatteryConfig, _BATTERY_BOUNDS)
    if battery.soc_min_pct >= battery.soc_max_pct:
        bsec.error("soc_min_pct", "must be < soc_max_pct")
    meter = _read_fields(top.sub("meter"), MeterConfig, _METER_BOUNDS)
    two_phase = _read_two_phase(top.sub("two_phase"), seed) if top.has("two_phase") else None
    district_heat = (_read_district_heat(top.sub("district_heat"), seed)
                     if top.has("district_heat") else None)
    plant = PlantConfig(trace=trace, pattern=pattern, constant_frac=constant_frac, loop=loop,
                        battery=battery, meter=meter, two_phase=two_phase,
                        district_heat=district_heat)
    elements = frozenset(name for name, e in (("two_phase", two_phase),
                                              ("district_heat", district_heat)) if e)

    endpoints, ua_endpoints = _read_endpoints(top, errors, base_dir)
    opcua: list[OpcUaDeviceSpec] = []
    devices = _read_devices(top, file, maps_dir, {e.name for e in endpoints}, loop.pumps,
                            elements, errors, ua_endpoints, opcua)
    top.finish()
    faults = _read_faults(faults_raw, file, {d.name: d for d in devices}, loop.leak_cable_m,
                          errors)
    return SimConfig(plant=plant, step_s=step_ms / 1000.0, realtime=realtime,
                     endpoints=endpoints, devices=devices, faults=faults, opcua=tuple(opcua))


def _read_two_phase(sec: Section, seed: int) -> TwoPhaseSetup:
    """[two_phase]: TwoPhaseLoopConfig's keys plus how the plant drives the loop."""
    d = TwoPhaseSetup()
    setup = {k: sec.get_float(k, getattr(d, k), minval=_TWO_PHASE_BOUNDS[k][0],
                              maxval=_TWO_PHASE_BOUNDS[k][1])
             for k in ("heat_fraction", "pump_pct", "valve_travel_s", "initial_valve_pct")}
    model = _read_fields(sec, TwoPhaseLoopConfig, _TWO_PHASE_BOUNDS, skip=("seed",))
    return TwoPhaseSetup(model=dataclasses.replace(model, seed=seed), **setup)


def _read_district_heat(sec: Section, seed: int) -> DistrictHeatSetup:
    """[district_heat]: DistrictHeatConfig's keys plus how the plant drives the network."""
    d = DistrictHeatSetup()
    from_loop = sec.get_bool("source_from_loop", d.source_from_loop)
    setup = {k: sec.get_float(k, getattr(d, k), minval=_DISTRICT_HEAT_BOUNDS[k][0],
                              maxval=_DISTRICT_HEAT_BOUNDS[k][1])
             for k in ("pump_pct", "hp_pct", "ramp_pct_per_s")}
    model = _read_fields(sec, DistrictHeatConfig, _DISTRICT_HEAT_BOUNDS, skip=("seed",))
    return DistrictHeatSetup(model=dataclasses.replace(model, seed=seed + 1),
                             source_from_loop=from_loop, **setup)


def _read_endpoints(top: Section, errors: ErrorLog, base_dir: Path | None = None,
                    ) -> tuple[tuple[EndpointSpec, ...], dict[str, OpcUaEndpointSpec]]:
    out: list[EndpointSpec] = []
    ua_out: dict[str, OpcUaEndpointSpec] = {}
    seen: dict[tuple[str, int], str] = {}
    for name, body in top.table("endpoints", required=True).items():
        sec = Section(top.file, f"endpoints.{name}", body, errors)
        host = sec.get_str("host", "127.0.0.1")
        port = sec.get_int("port", minval=1, maxval=65535)
        protocol = sec.get_str("protocol", "modbus", choices=("modbus", "opcua"))
        opcua = protocol == "opcua"  # an OPC UA server (opcua_device.py); these keys are its
        path = sec.get_str("path", "") if opcua else ""
        update_ms = sec.get_float("update_ms", 50.0, minval=1.0, maxval=60_000.0) if opcua \
            else 50.0
        security = _read_ua_security(sec, base_dir or Path(".")) if opcua else {}
        sec.finish()
        if isinstance(path, str) and path and not path.startswith("/"):
            sec.error("path", f"must start with '/', got {path!r}")
        if not _NAME.match(name):
            sec.error("(name)", "letters, digits, '-' and '_' only, starting with a letter")
        if isinstance(host, str) and isinstance(port, int):
            if (host, port) in seen:
                sec.error("port", f"{host}:{port} is already endpoint {seen[(host, port)]!r}")
            seen[(host, port)] = name
            if opcua:
                ua_out[name] = OpcUaEndpointSpec(name, host, port, str(path), update_ms / 1000,
                                                 **security)
            else:
                out.append(EndpointSpec(name, host, port))
    return tuple(out), ua_out


def _read_devices(top: Section, file: str, maps_dir: Path, endpoints: set[str], pumps: int,
                  elements: frozenset[str], errors: ErrorLog,
                  ua_endpoints: Mapping[str, OpcUaEndpointSpec] | None = None,
                  opcua: list[OpcUaDeviceSpec] | None = None) -> tuple[DeviceSpec, ...]:
    ua_endpoints = ua_endpoints or {}
    maps: dict[str, IoMap | None] = {}
    out: list[DeviceSpec] = []
    units: dict[tuple[str, int], str] = {}
    binds: dict[str, str] = {}
    for name, body in top.table("devices", required=True).items():
        sec = Section(file, f"devices.{name}", body, errors)
        model = sec.get_str("io_map")
        endpoint = sec.get_str("endpoint")
        unit_id = sec.get_int("unit_id", 1, minval=1, maxval=247)
        bind = sec.get_str("binds", "")
        sec.finish()
        if not _NAME.match(name):
            sec.error("(name)", "letters, digits, '-' and '_' only, starting with a letter")
        if isinstance(endpoint, str) and endpoint not in endpoints | set(ua_endpoints):
            sec.error("endpoint", f"no [endpoints.{endpoint}]")
        if isinstance(endpoint, str) and isinstance(unit_id, int):
            other = units.setdefault((endpoint, unit_id), name)
            if other != name:
                sec.error("unit_id", f"{unit_id} is already device {other!r} on {endpoint!r}")
        io_map: IoMap | None = None
        if isinstance(model, str):
            if model not in maps:
                map_path = maps_dir / f"{model}.toml"
                maps[model] = load_io_map(map_path, errors) if map_path.exists() else None
                if not map_path.exists():
                    sec.error("io_map", f"no io_map {model!r} in {maps_dir}")
            io_map = maps[model]
        if io_map is not None and isinstance(endpoint, str) and (
                io_map.protocol == "opcua" or endpoint in ua_endpoints):
            io_map = _opcua_device(sec, name, io_map, ua_endpoints.get(endpoint), maps_dir,
                                   maps, errors, opcua)
        if io_map is not None and isinstance(bind, str):
            problem = bind_error(io_map.model, bind, pumps, elements)
            if problem:
                sec.error("binds", problem)
            elif bind and (bind in EXCLUSIVE_BINDS or bind.startswith("pump")):
                other = binds.setdefault(bind, name)
                if other != name:
                    sec.error("binds", f"{bind!r} is already driven by device {other!r}")
        if io_map is not None and isinstance(endpoint, str) and isinstance(unit_id, int):
            out.append(DeviceSpec(name, io_map, endpoint, unit_id, bind or ""))
    return tuple(out)


def _read_ua_security(sec: Section, base_dir: Path) -> dict[str, Any]:
    """An OPC UA endpoint's `security` and, unless "none", its `cert`, `key` and `trust`."""
    mode = sec.get_str("security", "none", choices=("none", *SECURITY))
    paths = {k: sec.get_str(k, None) for k in ("cert", "key", "trust")}
    if mode not in SECURITY:
        for key, given in paths.items():
            if given is not None:
                sec.error(key, 'only with a security other than "none"')
        return {}
    out: dict[str, Any] = {"security": mode}
    for key, given in paths.items():
        if not isinstance(given, str):
            sec.error(key, f"required with security = {mode!r}")
            return {}
        out[key] = base_dir / given
        if not out[key].exists():
            sec.error(key, f"no such file or folder {str(out[key])!r}")
    return out


def _opcua_device(sec: Section, name: str, io_map: IoMap, endpoint: OpcUaEndpointSpec | None,
                  maps_dir: Path, maps: dict[str, IoMap | None], errors: ErrorLog,
                  out: list[OpcUaDeviceSpec] | None) -> IoMap | None:
    """An OPC UA device: its endpoint must be an OPC UA one; returns the Modbus io_map of the
    model that simulates it (SIMULATED_BY), recording the OPC UA map in `out`."""
    if endpoint is None or io_map.protocol != "opcua":
        sec.error("endpoint" if endpoint is None else "io_map",
                  f"io_map {io_map.model!r} speaks {io_map.protocol}; its endpoint must be "
                  f"{'an OPC UA' if endpoint is None else 'a Modbus'} endpoint")
        return None
    model = SIMULATED_BY.get(io_map.model)
    if model is None:
        sec.error("io_map", f"no simulation for OPC UA model {io_map.model!r} "
                            f"(have {', '.join(sorted(SIMULATED_BY))})")
        return None
    if model not in maps:
        maps[model] = load_io_map(maps_dir / f"{model}.toml", errors)
    backing = maps[model]
    problem = backing_error(io_map, backing) if backing is not None else "not loaded"
    if backing is None or problem:
        sec.error("io_map", f"{model!r} cannot simulate it: {problem}")
        return None
    if out is not None:
        out.append(OpcUaDeviceSpec(name, endpoint, io_map))
    return backing


def _read_faults(raw: Any, file: str, devices: Mapping[str, DeviceSpec], cable_m: float,
                 errors: ErrorLog) -> tuple[FaultSpec, ...]:
    if not isinstance(raw, list):
        errors.add(file, "", "faults", "must be an array of tables ([[faults]])")
        return ()
    out: list[FaultSpec] = []
    for i, body in enumerate(raw):
        sec = Section(file, f"faults.{i}", body, errors)
        device = sec.get_str("device")
        kind = sec.get_str("kind", choices=_FAULT_KINDS)
        at_s = sec.get_float("at_s", 0.0, minval=0.0)
        duration_s = sec.get_float("duration_s", None, above=0.0)
        point = sec.get_str("point", None)
        rate = sec.get_float("rate_per_s", 0.0, minval=-1e6, maxval=1e6)
        position = sec.get_float("position_m", 0.0, minval=0.0, maxval=cable_m)
        response = sec.get_str("response", "exception", choices=("exception", "silent"))
        factor = sec.get_float("factor", 10.0, minval=-1e6, maxval=1e6)
        sec.finish()
        if not isinstance(device, str) or kind not in _FAULT_KINDS:
            continue
        spec = FaultSpec(device, FaultKind(kind), at_s=at_s, duration_s=duration_s, point=point,
                         rate_per_s=rate, position_m=position, response=response,
                         factor=factor)
        problem = fault_error(spec, devices.get(device))
        if problem:
            key = "device" if device not in devices else "point" if "point" in problem else "kind"
            sec.error(key, problem)
            continue
        out.append(spec)
    return tuple(out)
