"""Load a node's TOML config (and the io_maps it names) into a frozen NodeConfig.

The one loader for every role: `pswd-edge run` and `check-config` both call it, so a config
that loads here has passed every check the assembler relies on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_runtime.assembly.config import ROLES, SECTIONS, NodeConfig, SectionInput
from edge_runtime.config.devices import NAME, read_devices
from edge_runtime.config.iomap import default_io_maps_dir
from edge_runtime.config.reader import ErrorLog, Section, read_toml
from edge_runtime.federation.topics import NodeTopics
from edge_runtime.safety.config import device_points, load_safety
from edge_runtime.servers.https.config import with_security

SECTION_BY_KEY = {spec.key: spec for spec in SECTIONS}


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
    # The cabinet's link switches (spec 10.4 c): inputs whose rising edge cuts every external
    # link, and restores them (node.py LinkSwitch).
    disconnect_input = node.get_str("disconnect_input", "")
    reconnect_input = node.get_str("reconnect_input", "")
    node.finish()
    if isinstance(name, str) and not NAME.match(name):
        node.error("name", "letters, digits, '-' and '_' only, starting with a letter")
    elif isinstance(name, str) and isinstance(site, str):
        try:  # both become MQTT topic levels; some node names are the site's own topics
            NodeTopics(site, name)
        except ValueError as exc:
            node.error("site" if str(exc).startswith("site") else "name", str(exc))
    if watchdog_ms is None:
        watchdog_ms = max(5 * period_ms, 500.0)
    elif watchdog_ms < 2 * period_ms:
        node.error("watchdog_ms", f"must be at least two scan periods ({2 * period_ms:g} ms)")
    maps_dir = (path.parent / maps_dir_raw).resolve() if maps_dir_raw else default_io_maps_dir()

    devices_table = top.table("devices")
    safety_table = top.table("safety")
    bodies = {spec.key: top.table(spec.key) for spec in SECTIONS if top.has(spec.key)}
    top.finish()
    for spec in SECTIONS:
        if role not in ROLES:
            break
        if spec.key in bodies and role not in spec.roles:
            errors.add(file, spec.key, "(table)",
                       f"only for role {' or '.join(spec.roles)}, not {role!r}")
            del bodies[spec.key]  # its points would only add noise
        elif spec.key not in bodies and role in spec.required_by:
            errors.add(file, spec.key, "(table)", f"required for role {role}")

    devices = read_devices(devices_table, file, maps_dir, errors)
    complete = len(devices) == len(devices_table)  # a broken device makes every name unknown
    inputs, outputs, limits = device_points(devices)
    sections: dict[str, Any] = {}
    for spec in SECTIONS:
        if spec.key in bodies and (complete or not spec.needs_points):
            sections[spec.key] = spec.read(SectionInput(
                file, bodies[spec.key], errors, path.parent, inputs, outputs, limits))
    if role == "site" and "site" not in sections:  # every [site] key has a default
        sections["site"] = SECTION_BY_KEY["site"].read(SectionInput(
            file, {}, errors, path.parent, inputs, outputs, limits))
    for key, point in (("disconnect_input", disconnect_input),
                       ("reconnect_input", reconnect_input)):
        if complete and point and point not in inputs:
            node.error(key, f"unknown input {point!r}")
    if complete:
        sections["safety"] = load_safety(safety_table, file, inputs, outputs, errors,
                                         limits=limits)
    if sections.get("https") is not None:  # its files default to [security]'s
        sections["https"] = with_security(sections["https"], sections.get("security"),
                                          "https", lambda s, k, r: errors.add(file, s, k, r))
    https, mqtt = sections.get("https"), sections.get("mqtt")
    if (https is not None and mqtt is not None and https.command_keys is not None
            and mqtt.command_keys is not None and https.command_keys != mqtt.command_keys):
        # one verifier per node: a command's nonce is spent once, whichever transport
        errors.add(file, "https", "command_keys", f"must be [mqtt] command_keys "
                   f"({mqtt.command_keys}) or left out: the node has one command verifier")
    errors.raise_if_any()
    sections["coordinator"] = sections.pop("site", None)
    return NodeConfig(
        name=name,
        role=role,
        site=site,
        scan_period_s=period_ms / 1000.0,
        watchdog_s=watchdog_ms / 1000.0,
        devices=tuple(devices),
        source=path,
        io_maps_dir=maps_dir,
        realtime_priority=realtime_priority,
        disconnect_input=str(disconnect_input),
        reconnect_input=str(reconnect_input),
        **sections,
    )


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
