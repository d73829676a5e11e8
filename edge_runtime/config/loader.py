"""Load a node's TOML config (and the io_maps it names) into a frozen NodeConfig."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edge_runtime.config.iomap import default_io_maps_dir, load_io_map
from edge_runtime.config.reader import ErrorLog, Section, read_toml
from edge_runtime.config.schema import ROLES, DeviceConfig, IoMap, Limits, NodeConfig
from edge_runtime.control.cdu_config import CduControlConfig, load_cdu_control
from edge_runtime.control.heat_recovery import HeatRecoveryConfig, load_heat_recovery
from edge_runtime.control.smoothing import SmoothingConfig, load_smoothing
from edge_runtime.control.two_phase import TwoPhaseConfig, load_two_phase
from edge_runtime.federation.config import MqttConfig, read_mqtt
from edge_runtime.safety.config import SafetyConfig, device_points, load_safety
from edge_runtime.site.config import SiteConfig, read_site_section

# Control sections and the roles that run them (roles.py builds their blocks).
_CONTROL_ROLES = {"control": ("cdu",), "two_phase": ("cdu",), "smoothing": ("rack",),
                  "heat_recovery": ("cdu", "site"), "site": ("site",)}

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_LIMIT_ORDER = ("low_low", "low", "high", "high_high")


def load_node_config(path: Path | str, *, overrides: dict[str, Any] | None = None) -> NodeConfig:
    """Read and check a node config; raises ConfigError listing every problem found."""
    path = Path(path)
    errors = ErrorLog()
    data = read_toml(path, errors)
    errors.raise_if_any()
    assert data is not None
    if overrides:
        data = _merge(data, overrides)
    file = str(path)
    top = Section(file, "", data, errors)

    node = top.sub("node", required=True)
    name = node.get_str("name")
    role = node.get_str("role", choices=ROLES)
    site = node.get_str("site", "site")
    period_ms = node.get_float("scan_period_ms", 100.0, minval=10.0, maxval=10_000.0)
    watchdog_ms = node.get_float("watchdog_ms", None, minval=20.0, maxval=60_000.0)
    maps_dir_raw = node.get_str("io_maps_dir", None)
    realtime_priority = node.get_int("realtime_priority", 0, minval=0, maxval=99)
    node.finish()
    if isinstance(name, str) and not _NAME.match(name):
        node.error("name", "letters, digits, '-' and '_' only, starting with a letter")
    if watchdog_ms is None:
        watchdog_ms = max(5 * period_ms, 500.0)
    elif watchdog_ms < 2 * period_ms:
        node.error("watchdog_ms", f"must be at least two scan periods ({2 * period_ms:g} ms)")
    maps_dir = (path.parent / maps_dir_raw).resolve() if maps_dir_raw else default_io_maps_dir()

    devices_table = top.table("devices")
    safety_table = top.table("safety")
    control_tables = {key: top.table(key) for key in _CONTROL_ROLES if top.has(key)}
    mqtt: MqttConfig | None = read_mqtt(top.sub("mqtt"), path.parent) if top.has("mqtt") else None
    top.finish()
    for key, roles in _CONTROL_ROLES.items():
        if key in control_tables and role in ROLES and role not in roles:
            errors.add(file, key, "(table)", f"only for role {' or '.join(roles)}, not {role!r}")
            del control_tables[key]  # its points would only add noise

    io_maps: dict[str, IoMap | None] = {}
    devices: list[DeviceConfig] = []
    for dev_name, body in devices_table.items():
        sec = Section(file, f"devices.{dev_name}", body, errors)
        dev = _read_device(dev_name, sec, maps_dir, io_maps, errors)
        if dev is not None:
            devices.append(dev)
    _check_unit_ids(file, devices, errors)
    safety = SafetyConfig()
    control: CduControlConfig | None = None
    two_phase: TwoPhaseConfig | None = None
    smoothing: SmoothingConfig | None = None
    heat_recovery: HeatRecoveryConfig | None = None
    coordinator: SiteConfig | None = None
    if "site" in control_tables:
        coordinator = read_site_section(Section(file, "site", control_tables["site"], errors))
    if len(devices) == len(devices_table):  # a broken device would make every name unknown
        inputs, outputs, limits = device_points(devices)
        safety = load_safety(safety_table, file, inputs, outputs, errors, limits=limits)
        if "control" in control_tables:
            control = load_cdu_control(control_tables["control"], file, errors, inputs, outputs)
        if "two_phase" in control_tables:
            sec = Section(file, "two_phase", control_tables["two_phase"], errors)
            two_phase = load_two_phase(sec, file, errors)
            _check_points(sec, "two_phase.points", vars_of(two_phase.points), inputs, outputs,
                          writes=("output", "pump"))
        if "smoothing" in control_tables:
            sec = Section(file, "smoothing", control_tables["smoothing"], errors)
            smoothing = load_smoothing(sec, file, errors)
            _check_points(sec, "smoothing.points", vars_of(smoothing.points), inputs, outputs,
                          writes=("setpoint", "enable"))
        if "heat_recovery" in control_tables:
            sec = Section(file, "heat_recovery", control_tables["heat_recovery"], errors)
            heat_recovery = load_heat_recovery(sec, file, errors)
            _check_points(sec, "heat_recovery.points", vars_of(heat_recovery.points), inputs,
                          outputs, writes=("pump", "heat_pump"))  # "" = not fitted
    errors.raise_if_any()
    return NodeConfig(
        name=name,
        role=role,
        site=site,
        scan_period_s=period_ms / 1000.0,
        watchdog_s=watchdog_ms / 1000.0,
        devices=tuple(devices),
        source=path,
        io_maps_dir=maps_dir,
        safety=safety,
        control=control,
        two_phase=two_phase,
        smoothing=smoothing,
        heat_recovery=heat_recovery,
        mqtt=mqtt,
        coordinator=coordinator,
        realtime_priority=realtime_priority,
    )


def vars_of(points: Any) -> dict[str, str]:
    """A points dataclass as {key: "device.point"}."""
    return {k: getattr(points, k) for k in points.__dataclass_fields__}


def _check_points(sec: Section, name: str, points: dict[str, str], inputs: Any, outputs: Any,
                  *, writes: tuple[str, ...]) -> None:
    """Every named point exists in the node, outputs among its outputs ("" = not used)."""
    for key, point in points.items():
        if not point:
            continue
        known, what = (outputs, "output") if key in writes else (inputs, "input")
        if point not in known:
            sec.errors.add(sec.file, name, key, f"unknown {what} {point!r}")


def _read_device(
    name: str, sec: Section, maps_dir: Path, io_maps: dict[str, IoMap | None], errors: ErrorLog
) -> DeviceConfig | None:
    if not _NAME.match(name):
        sec.error("(name)", "device names use letters, digits, '-' and '_', starting with a letter")
    model = sec.get_str("io_map")
    endpoint = sec.get_str("endpoint")
    unit_id = sec.get_int("unit_id", 1, minval=0, maxval=247)
    poll_ms = sec.get_float("poll_ms", 100.0, minval=10.0, maxval=600_000.0)
    timeout_ms = sec.get_float("timeout_ms", 250.0, minval=10.0, maxval=60_000.0)
    refresh_ms = sec.get_float("refresh_ms", 1000.0, minval=10.0, maxval=600_000.0)
    max_gap = sec.get_int("max_gap", 0, minval=0, maxval=124)
    limits_table = sec.table("limits")
    sec.finish()

    host, port = "", 0
    if isinstance(endpoint, str):
        m = re.fullmatch(r"([^:\s]+):(\d{1,5})", endpoint)
        if not m or not 1 <= int(m.group(2)) <= 65535:
            sec.error("endpoint", f"must be host:port with port 1..65535, got {endpoint!r}")
        else:
            host, port = m.group(1), int(m.group(2))

    io_map: IoMap | None = None
    if isinstance(model, str):
        if model not in io_maps:
            map_path = maps_dir / f"{model}.toml"
            if not map_path.exists():
                sec.error("io_map", f"no io_map {model!r} in {maps_dir}")
                io_maps[model] = None
            else:
                io_maps[model] = load_io_map(map_path, errors)
        io_map = io_maps[model]

    limits: dict[str, Limits] = {}
    for point_name, body in limits_table.items():
        lsec = Section(sec.file, f"{sec.name}.limits.{point_name}", body, errors)
        lim = _read_limits(lsec)
        lsec.finish()
        if io_map is not None:
            try:
                spec = io_map.point(point_name)
            except KeyError:
                lsec.error("(point)", f"io_map {io_map.model!r} has no point {point_name!r}")
                continue
            if not spec.access.readable:
                lsec.error("(point)", f"{point_name!r} is write-only; limits apply to inputs")
        if lim is not None:
            limits[point_name] = lim

    if io_map is not None:
        for out in io_map.outputs:
            if out.max_hold_s is not None and refresh_ms / 1000.0 > out.max_hold_s / 2:
                sec.error("refresh_ms", f"{refresh_ms:g} ms is more than half the max_hold_s "
                          f"({out.max_hold_s:g} s) of output {out.name!r}")
    if io_map is None or not host:
        return None
    return DeviceConfig(
        name=name,
        io_map=io_map,
        host=host,
        port=port,
        unit_id=unit_id,
        poll_s=poll_ms / 1000.0,
        timeout_s=timeout_ms / 1000.0,
        refresh_s=refresh_ms / 1000.0,
        max_gap=max_gap,
        limits=MappingProxyType(limits),
    )


def _read_limits(sec: Section) -> Limits | None:
    values = {k: sec.get_float(k, None) for k in _LIMIT_ORDER}
    hysteresis = sec.get_float("hysteresis", 0.0, minval=0.0)
    delay_s = sec.get_float("delay_s", 0.0, minval=0.0, maxval=3600.0)
    present = [(k, v) for k, v in values.items() if v is not None]
    ok = True
    for (k1, v1), (k2, v2) in itertools.pairwise(present):
        if not v1 < v2:
            sec.error(k2, f"thresholds must rise low_low < low < high < high_high; "
                      f"{k1} = {v1:g} is not below {k2} = {v2:g}")
            ok = False
    if not present:
        sec.error("(table)", "give at least one of low_low, low, high, high_high")
        ok = False
    if not ok:
        return None
    return Limits(hysteresis=hysteresis, delay_s=delay_s, **values)


def _check_unit_ids(file: str, devices: list[DeviceConfig], errors: ErrorLog) -> None:
    seen: dict[tuple[str, int, int], str] = {}
    for dev in devices:
        key = (dev.host, dev.port, dev.unit_id)
        if key in seen:
            errors.add(file, f"devices.{dev.name}", "unit_id",
                       f"unit {dev.unit_id} at {dev.endpoint} is already used by device "
                       f"{seen[key]!r}")
        else:
            seen[key] = dev.name


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
