"""Typed, frozen configuration objects. Built only by the loaders; never mutated at run time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.io.codec import Encoding

if TYPE_CHECKING:  # these import this module: import them lazily at run time
    from edge_runtime.control.cdu_config import CduControlConfig
    from edge_runtime.control.heat_recovery import HeatRecoveryConfig
    from edge_runtime.control.smoothing import SmoothingConfig
    from edge_runtime.control.two_phase import TwoPhaseConfig
    from edge_runtime.federation.config import MqttConfig
    from edge_runtime.safety.config import SafetyConfig
    from edge_runtime.site.config import SiteConfig


class Table(Enum):
    """Modbus register table a point lives in."""

    HOLDING = "holding"
    INPUT = "input"


class Access(Enum):
    """r: polled input; w: output written by the runtime; rw: output that is also polled back."""

    R = "r"
    W = "w"
    RW = "rw"

    @property
    def readable(self) -> bool:
        """Polled into the input image."""
        return self in (Access.R, Access.RW)

    @property
    def writable(self) -> bool:
        """Written from the output image."""
        return self in (Access.W, Access.RW)


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One point of a device model's register map."""

    name: str
    table: Table
    address: int  # 0-based protocol address
    encoding: Encoding
    access: Access
    unit: str = ""
    description: str = ""
    minimum: float | None = None  # engineering range; outputs outside it are refused
    maximum: float | None = None
    failsafe: float | None = None  # outputs only: value driven on watchdog, comms loss, max hold
    max_hold_s: float | None = None  # outputs only: longest a value stands without a fresh scan

    @property
    def count(self) -> int:
        """Registers occupied."""
        return self.encoding.count

    @property
    def end(self) -> int:
        """One past the last register address."""
        return self.address + self.encoding.count


@dataclass(frozen=True, slots=True)
class IoMap:
    """A device model: its points, read from io_maps/<model>.toml."""

    model: str
    description: str
    points: tuple[PointSpec, ...]
    source: Path

    def point(self, name: str) -> PointSpec:
        """Point by name; KeyError names the model when unknown."""
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(f"io_map {self.model!r} has no point {name!r}")

    @property
    def inputs(self) -> tuple[PointSpec, ...]:
        """Points polled into the input image."""
        return tuple(p for p in self.points if p.access.readable)

    @property
    def outputs(self) -> tuple[PointSpec, ...]:
        """Points written from the output image."""
        return tuple(p for p in self.points if p.access.writable)


@dataclass(frozen=True, slots=True)
class Limits:
    """Alarm thresholds of one input point; any may be absent, present ones strictly ordered."""

    low_low: float | None = None
    low: float | None = None
    high: float | None = None
    high_high: float | None = None
    hysteresis: float = 0.0
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One field device a node talks to."""

    name: str
    io_map: IoMap
    host: str
    port: int
    unit_id: int
    poll_s: float
    timeout_s: float
    refresh_s: float  # outputs are rewritten at least this often even when unchanged
    max_gap: int  # registers a read may span over unused addresses to save a request
    limits: Mapping[str, Limits] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        """host:port."""
        return f"{self.host}:{self.port}"


ROLES = ("cdu", "rack", "site")


def _no_safety() -> SafetyConfig:
    from edge_runtime.safety.config import SafetyConfig

    return SafetyConfig()


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A whole node: its role, scan timing and devices."""

    name: str
    role: str
    site: str
    scan_period_s: float
    watchdog_s: float
    devices: tuple[DeviceConfig, ...]
    source: Path
    io_maps_dir: Path
    safety: SafetyConfig = field(default_factory=_no_safety)  # the [safety] section
    control: CduControlConfig | None = None  # [control]: thermal, pumps, preparation (cdu)
    two_phase: TwoPhaseConfig | None = None  # [two_phase] (cdu, where a two-phase loop is fitted)
    smoothing: SmoothingConfig | None = None  # [smoothing]: battery load smoothing (rack)
    heat_recovery: HeatRecoveryConfig | None = None  # [heat_recovery] (cdu or site)
    mqtt: MqttConfig | None = None  # [mqtt]: the node's federation link, when it has one
    coordinator: SiteConfig | None = None  # [site]: admission and dispatch (site role)
    realtime_priority: int = 0  # [node]: SCHED_FIFO priority of the node (0: normal scheduling)

    def device(self, name: str) -> DeviceConfig:
        """Device by name."""
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(f"no device {name!r}")
