"""Device-level config: points, io_maps, limits, devices. Frozen; built only by the loaders.

The bottom layer: it imports nothing of the runtime but the register codec. A whole node's
config (NodeConfig, its sections) lives with the assembler (edge_runtime/assembly/config.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from edge_runtime.config.codec import Encoding


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


# What an output moves, declared per io_map output (`class = "pump"`): the rights table
# (core/authority.py) grants roles per class. A closed set; unknown names fail the load.
# Field protocols a device model may speak (io_map `[device] protocol`); the assembler picks the
# driver by it (edge_runtime/assembly/build.py).
PROTOCOLS = ("modbus", "opcua", "mqtt")

OUTPUT_CLASSES = ("pump", "valve", "battery", "heater", "heat_recovery", "isolation",
                  "setpoint", "heartbeat", "parameter")


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
    output_class: str = ""  # outputs only: one of OUTPUT_CLASSES
    safe_direction: str = "low"  # outputs only: which way is safer when rules disagree
    mirrors: str = ""  # a device comms-loss register: the output whose safe value it holds
    # Where the point lives on a device that is not Modbus (io_map `ref`): the NodeId on an
    # OPC UA server ("ns=2;s=Bess.SoC"), the point name in a sensor node's MQTT telemetry.
    # `table` and `address` then mean nothing; `type` still decides what values are valid.
    ref: str = ""

    @property
    def count(self) -> int:
        """Registers occupied."""
        return self.encoding.count

    @property
    def end(self) -> int:
        """One past the last register address."""
        return self.address + self.encoding.count

    @property
    def integral(self) -> bool:
        """Whole numbers only: an integer register taken as is (bit field, enumeration,
        counter), where rounding 2.5 to 2 would write a word nobody asked for."""
        enc = self.encoding
        return enc.dtype.is_integer and enc.scale == 1.0 and enc.offset == 0.0


@dataclass(frozen=True, slots=True)
class IoMap:
    """A device model: its points, read from io_maps/<model>.toml."""

    model: str
    description: str
    points: tuple[PointSpec, ...]
    source: Path
    protocol: str = "modbus"  # one of PROTOCOLS: which driver talks to a device of this model

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


# OPC UA client security a device may ask for (`[devices.X] security`): "none" for the lab,
# or a Basic256Sha256 secure channel with the client certificate `client_cert`/`client_key`,
# the server's certificate pinned by `server_cert`.
OPCUA_SECURITY = ("none", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt")


@dataclass(frozen=True, slots=True)
class ClientSecurity:
    """How an OPC UA device's secure channel is made: policy_mode from OPCUA_SECURITY, paths
    to the client certificate and key (PEM or DER) and the server certificate it trusts."""

    policy_mode: str
    client_cert: Path
    client_key: Path
    server_cert: Path


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
    # The endpoint as configured when it is not Modbus host:port: "opc.tcp://host:port/path"
    # for OPC UA, "mqtt:<sensor node id>" for a sensor node reached through the node's broker.
    url: str = ""
    security: ClientSecurity | None = None  # OPC UA devices only; None: SecurityPolicy None

    @property
    def protocol(self) -> str:
        """The io_map's protocol: modbus, opcua or mqtt."""
        return self.io_map.protocol

    @property
    def endpoint(self) -> str:
        """host:port for Modbus, the configured URL otherwise."""
        return self.url or f"{self.host}:{self.port}"
