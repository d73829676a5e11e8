"""Device-level loading: the [devices] tables of a node config, their io_maps and limits.

The node loader (edge_runtime/assembly/loader.py) calls `read_devices` for the devices and
`check_points` for every `[x.points]` table a control section names; both stay below the
control, safety and federation layers so those can use them without import cycles.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edge_runtime.config.iomap import load_io_map
from edge_runtime.config.reader import ErrorLog, Section
from edge_runtime.config.schema import OPCUA_SECURITY, ClientSecurity, DeviceConfig, IoMap, Limits

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_LIMIT_ORDER = ("low_low", "low", "high", "high_high")


def read_devices(table: Mapping[str, Any], file: str, maps_dir: Path,
                 errors: ErrorLog) -> list[DeviceConfig]:
    """Every `[devices.NAME]` table of a node config; errors go to `errors`."""
    io_maps: dict[str, IoMap | None] = {}
    devices: list[DeviceConfig] = []
    for dev_name, body in table.items():
        sec = Section(file, f"devices.{dev_name}", body, errors)
        dev = _read_device(dev_name, sec, maps_dir, io_maps, errors)
        if dev is not None:
            devices.append(dev)
    _check_unit_ids(file, devices, errors)
    return devices


def read_points(sec: Section, defaults: Any, optional: Collection[str] = ()) -> dict[str, Any]:
    """A section's `[x.points]` table: every field of the `defaults` dataclass as a
    "device.point" name ("" allowed for the `optional` ones); unknown keys are errors."""
    pts = sec.sub("points")
    names: dict[str, Any] = {}
    for key in defaults.__dataclass_fields__:
        value = pts.get_str(key, getattr(defaults, key))
        if isinstance(value, str) and not (value == "" and key in optional) \
                and value.count(".") != 1:
            pts.error(key, f"must name a point as 'device.point', got {value!r}")
        names[key] = value
    pts.finish()
    return names


def vars_of(points: Any) -> dict[str, str]:
    """A points dataclass as {key: "device.point"}."""
    return {k: getattr(points, k) for k in points.__dataclass_fields__}


def check_points(sec: Section, name: str, points: Mapping[str, str], inputs: Collection[str],
                 outputs: Collection[str], *, writes: tuple[str, ...]) -> None:
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
    if not NAME.match(name):
        sec.error("(name)", "device names use letters, digits, '-' and '_', starting with a letter")
    model = sec.get_str("io_map")
    endpoint = sec.get_str("endpoint")
    unit_id = sec.get_int("unit_id", 1, minval=0, maxval=247)
    poll_ms = sec.get_float("poll_ms", 100.0, minval=10.0, maxval=600_000.0)
    timeout_ms = sec.get_float("timeout_ms", 250.0, minval=10.0, maxval=60_000.0)
    refresh_ms = sec.get_float("refresh_ms", 1000.0, minval=10.0, maxval=600_000.0)
    max_gap = sec.get_int("max_gap", 0, minval=0, maxval=124)
    limits_table = sec.table("limits")
    security = _read_security(sec)
    sec.finish()

    io_map: IoMap | None = None
    if isinstance(model, str):
        if model not in io_maps:
            map_path = maps_dir / f"{model}.toml"
            try:
                found = map_path.exists()
            except OSError:  # a name too long for the file system: no such io_map either
                found = False
            if not found:
                sec.error("io_map", f"no io_map {model[:80]!r} in {maps_dir}")
                io_maps[model] = None
            else:
                io_maps[model] = load_io_map(map_path, errors)
        io_map = io_maps[model]

    protocol = io_map.protocol if io_map is not None else "modbus"
    host, port, url = "", 0, ""
    if isinstance(endpoint, str):
        host, port, url = _endpoint(sec, protocol, endpoint)

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
    if io_map is not None and protocol == "opcua":
        _check_opcua_refs(sec, io_map)
    if protocol != "opcua" and sec.has("security"):
        sec.error("security", f"only OPC UA devices take it; io_map {model!r} is {protocol}")
    if io_map is None or not (host or url):
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
        url=url,
        security=security if protocol == "opcua" else None,
    )


# The forms an OPC UA ref may take (io/opcua_codec.py parses and resolves them): a NodeId,
# the same under a namespace URI, or a browse path from the Root folder.
_IDENT = r"(i=\d+|s=.+|g=[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}|b=\S+)"
_OPCUA_REF = re.compile(rf"(ns=\d+;)?{_IDENT}|nsu=[^;\s]+;{_IDENT}|(/[^/]+)+")


def _check_opcua_refs(sec: Section, io_map: IoMap) -> None:
    """Every ref of an OPC UA io_map in one of its forms; the error names point and ref."""
    for p in io_map.points:
        if p.ref and not _OPCUA_REF.fullmatch(p.ref):  # empty: the io_map loader says so
            sec.error("io_map", f"{io_map.model!r} point {p.name!r}: ref {p.ref!r} is not a "
                      "NodeId ('ns=2;s=Name', 'i=85'), 'nsu=URI;s=Name' or a browse path "
                      "('/Objects/2:Folder/2:Name')")


def _read_security(sec: Section) -> ClientSecurity | None:
    """`security` and, unless it is "none", the certificate paths (relative to the file)."""
    mode = sec.get_str("security", "none", choices=OPCUA_SECURITY)
    paths = {k: sec.get_str(k, None) for k in ("client_cert", "client_key", "server_cert")}
    if mode not in OPCUA_SECURITY or mode == "none":
        for key, given in paths.items():
            if given is not None:
                sec.error(key, 'only with a security other than "none"')
        return None
    base = Path(sec.file).parent
    found: dict[str, Path] = {}
    for key, given in paths.items():
        if not isinstance(given, str):
            sec.error(key, f"required with security = {mode!r}")
            continue
        path = base / given
        if not path.is_file():
            sec.error(key, f"no file {str(path)!r}")
        found[key] = path
    if len(found) != len(paths):
        return None
    return ClientSecurity(mode, found["client_cert"], found["client_key"], found["server_cert"])


_ENDPOINTS = {
    "modbus": (re.compile(r"([^:\s/]+):(\d{1,5})"), "host:port"),
    "opcua": (re.compile(r"opc\.tcp://([^:\s/]+):(\d{1,5})(/\S*)?"),
              "opc.tcp://host:port[/path]"),
    "mqtt": (re.compile(r"mqtt:([A-Za-z][A-Za-z0-9_-]*)"), "mqtt:<sensor node id>"),
}


def _endpoint(sec: Section, protocol: str, endpoint: str) -> tuple[str, int, str]:
    """(host, port, url) of a device endpoint in its protocol's form; errors name the form."""
    pattern, form = _ENDPOINTS[protocol]
    m = pattern.fullmatch(endpoint)
    if not m or (protocol != "mqtt" and not 1 <= int(m.group(2)) <= 65535):
        sec.error("endpoint", f"must be {form}"
                  + (" with port 1..65535" if protocol != "mqtt" else "")
                  + f" for a {protocol} device, got {endpoint!r}")
        return "", 0, ""
    if protocol == "mqtt":
        return "", 0, endpoint
    return m.group(1), int(m.group(2)), "" if protocol == "modbus" else endpoint


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
        if dev.protocol != "modbus":
            continue
        key = (dev.host, dev.port, dev.unit_id)
        if key in seen:
            errors.add(file, f"devices.{dev.name}", "unit_id",
                       f"unit {dev.unit_id} at {dev.endpoint} is already used by device "
                       f"{seen[key]!r}")
        else:
            seen[key] = dev.name
