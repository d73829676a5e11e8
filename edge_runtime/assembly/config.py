"""A whole node's config: NodeConfig, and the table of the sections a node file may hold.

Device-level config (points, io_maps, limits) sits below everything in edge_runtime/config/;
each control, safety, federation and site section is read by its own module. This is the one
place that knows which sections exist, which roles may use them and where each lands in
NodeConfig, so adding a section is one line in SECTIONS.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.config.devices import check_points, vars_of
from edge_runtime.config.reader import ErrorLog, Section
from edge_runtime.config.schema import DeviceConfig, Limits
from edge_runtime.control.cdu_config import CduControlConfig, load_cdu_control
from edge_runtime.control.heat_recovery import HeatRecoveryConfig, load_heat_recovery
from edge_runtime.control.smoothing import SmoothingConfig, load_smoothing
from edge_runtime.control.two_phase import TwoPhaseConfig, load_two_phase
from edge_runtime.core.authority import DEFAULT_RIGHTS, Rights, read_rights
from edge_runtime.federation.config import MqttConfig, read_mqtt
from edge_runtime.safety.config import SafetyConfig
from edge_runtime.security.audit import read_audit
from edge_runtime.security.secure_default import SecurityConfig, read_security
from edge_runtime.servers.https.config import HttpsConfig, read_https
from edge_runtime.servers.opcua.config import OpcUaConfig, read_opcua
from edge_runtime.site.config import SiteConfig, read_site_section

# The node roles (spec: rack and CDU controllers, the site coordinator); one list.
ROLES = ("cdu", "rack", "site")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A whole node: its role, scan timing, devices and every section it configures."""

    name: str
    role: str
    site: str
    scan_period_s: float
    watchdog_s: float
    devices: tuple[DeviceConfig, ...]
    source: Path
    io_maps_dir: Path
    safety: SafetyConfig = field(default_factory=SafetyConfig)  # [safety]
    control: CduControlConfig | None = None  # [control]: thermal, pumps, preparation (cdu)
    two_phase: TwoPhaseConfig | None = None  # [two_phase] (cdu, where a two-phase loop is fitted)
    smoothing: SmoothingConfig | None = None  # [smoothing]: battery load smoothing (rack)
    heat_recovery: HeatRecoveryConfig | None = None  # [heat_recovery] (cdu or site)
    mqtt: MqttConfig | None = None  # [mqtt]: the node's federation link, when it has one
    coordinator: SiteConfig | None = None  # [site]: admission and dispatch (site role)
    realtime_priority: int = 0  # [node]: SCHED_FIFO priority of the node (0: normal scheduling)
    rights: Rights = DEFAULT_RIGHTS  # [rights]: narrows the rights table (core/authority.py)
    opcua: OpcUaConfig | None = None  # [opcua]: the node's OPC UA server for BMS clients
    # [security]: certificates, keys, insecure (checked by `pswd-edge run`: secure_default.py)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    https: HttpsConfig | None = None  # [https]: the Table 3 endpoints (servers/https/)
    audit: Path | None = None  # [audit] path: the hash-chained audit log (security/audit.py)
    disconnect_input: str = ""  # [node]: rising edge cuts every external link (spec 10.4 c)
    reconnect_input: str = ""  # [node]: rising edge restores them

    def device(self, name: str) -> DeviceConfig:
        """Device by name."""
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(f"no device {name!r}")


@dataclass(frozen=True, slots=True)
class SectionInput:
    """What a section reader gets: its table and what the node's devices offer."""

    file: str
    body: Any
    errors: ErrorLog
    base_dir: Path
    inputs: Collection[str]
    outputs: Collection[str]
    limits: Mapping[str, Limits]

    def section(self, name: str) -> Section:
        """The body as an open Section named `name`."""
        return Section(self.file, name, self.body, self.errors)


@dataclass(frozen=True, slots=True)
class SectionSpec:
    """One optional section of a node file."""

    key: str  # TOML table and NodeConfig field
    roles: tuple[str, ...]  # roles that may use it
    read: Callable[[SectionInput], Any]
    needs_points: bool = True  # reads device point names: skipped while a device is broken
    required_by: tuple[str, ...] = ()  # roles that cannot run without it


def _points(inp: SectionInput, key: str, cfg: Any, writes: tuple[str, ...]) -> Any:
    # Every `[x.points]` names device points: one check, the same for every section.
    check_points(inp.section(key), f"{key}.points", vars_of(cfg.points), inp.inputs,
                 inp.outputs, writes=writes)
    return cfg


def _control(inp: SectionInput) -> CduControlConfig:
    return load_cdu_control(inp.body, inp.file, inp.errors, inp.inputs, inp.outputs)


def _two_phase(inp: SectionInput) -> TwoPhaseConfig:
    cfg = load_two_phase(inp.section("two_phase"), inp.file, inp.errors)
    return _points(inp, "two_phase", cfg, ("output", "pump"))  # type: ignore[no-any-return]


def _smoothing(inp: SectionInput) -> SmoothingConfig:
    cfg = load_smoothing(inp.section("smoothing"), inp.file, inp.errors)
    return _points(inp, "smoothing", cfg, ("setpoint", "enable"))  # type: ignore[no-any-return]


def _heat_recovery(inp: SectionInput) -> HeatRecoveryConfig:
    cfg = load_heat_recovery(inp.section("heat_recovery"), inp.file, inp.errors)
    return _points(inp, "heat_recovery", cfg, ("pump", "heat_pump"))  # type: ignore[no-any-return]


def _site(inp: SectionInput) -> SiteConfig:
    return read_site_section(inp.section("site"))


def _rights(inp: SectionInput) -> Rights:
    return read_rights(inp.section("rights"))


def _opcua(inp: SectionInput) -> OpcUaConfig:
    return read_opcua(inp.section("opcua"), inp.base_dir, {*inp.inputs, *inp.outputs})


def _mqtt(inp: SectionInput) -> MqttConfig:
    return read_mqtt(inp.section("mqtt"), inp.base_dir)


def _security(inp: SectionInput) -> SecurityConfig:
    return read_security(inp.section("security"), inp.base_dir)


def _https(inp: SectionInput) -> HttpsConfig | None:
    return read_https(inp.section("https"), inp.base_dir)


def _audit(inp: SectionInput) -> Path:
    return read_audit(inp.section("audit"), inp.base_dir)


# Optional sections, in the order they are read; [node], [devices] and [safety] are always read.
SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("mqtt", ROLES, _mqtt, needs_points=False, required_by=("site",)),
    SectionSpec("site", ("site",), _site, needs_points=False),
    SectionSpec("control", ("cdu",), _control),
    SectionSpec("two_phase", ("cdu",), _two_phase),
    SectionSpec("smoothing", ("rack",), _smoothing),
    SectionSpec("heat_recovery", ("cdu", "site"), _heat_recovery),
    SectionSpec("rights", ROLES, _rights, needs_points=False),
    SectionSpec("security", ROLES, _security, needs_points=False),
    SectionSpec("https", ROLES, _https, needs_points=False),
    SectionSpec("audit", ROLES, _audit, needs_points=False),
    SectionSpec("opcua", ROLES, _opcua),
)
