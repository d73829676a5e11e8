"""The assembler: the one place a node is put together from its config.

`pswd-edge run`, the demo, the scenario runner, the benches and the tests all call
`assemble`. It builds, in this order:

1. drivers (one Modbus endpoint per host:port, one driver per device) over the input table;
2. the process image, the event log and the command queue;
3. the safety layer (limits, redundancy groups, interlocks, forces) from [safety];
4. the role's control blocks (assembly/roles.py) over the operator-held outputs;
5. the scan order: commands -> heartbeat -> estimation (redundancy voting) -> the role's
   blocks -> interlocks -> the safety layer, always last (node.py adds it);
6. the Node (scan engine, watchdog) and its services: the MQTT link when [mqtt] is set, and
   for role site the site coordinator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge_runtime.assembly.config import NodeConfig
from edge_runtime.assembly.roles import ROLE_BLOCKS, RoleContext, RoleControls
from edge_runtime.config.schema import DeviceConfig
from edge_runtime.control.heartbeat import Heartbeat
from edge_runtime.core.clock import Clock, WallClock
from edge_runtime.core.commands import CommandQueue, ManualOutputs
from edge_runtime.core.events import EventLog
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Sample
from edge_runtime.core.ports import Endpoint, FieldDevice, InputTable
from edge_runtime.core.scan import ControlBlock
from edge_runtime.federation.link import NONCES, NodeLink
from edge_runtime.federation.sensor_node import build_sensor_nodes
from edge_runtime.io.failsafe import BlockingWriter
from edge_runtime.io.modbus import ModbusDevice, ModbusEndpoint
from edge_runtime.node import LinkSwitch, Node, NodeParts
from edge_runtime.safety.config import build_safety_layer
from edge_runtime.safety.protections import role_protections
from edge_runtime.safety.redundancy import RedundancyBlock
from edge_runtime.security.audit import AuditLog
from edge_runtime.security.ids import IntrusionDetector
from edge_runtime.security.signing import CommandVerifier, load_keys
from edge_runtime.site.coordinator import SiteCoordinator

if TYPE_CHECKING:  # imported where used: asyncua and aiohttp cost every CLI start ~1 s
    from edge_runtime.servers.https.service import HttpsService
    from edge_runtime.servers.opcua.server import OpcUaServer

# Builds a node's drivers around its input table; tests pass one that builds fakes.
DriverFactory = Callable[[NodeConfig, InputTable, Clock], dict[str, FieldDevice]]


@dataclass(frozen=True, slots=True)
class Drivers:
    """What one protocol's builder made for a node: its drivers, the connections they share
    (closed at shutdown) and the blocking safe-image writer the watchdog thread uses."""

    drivers: dict[str, FieldDevice]
    endpoints: list[Endpoint] = field(default_factory=list)
    failsafe_writers: dict[str, BlockingWriter] = field(default_factory=dict)  # by protocol


# One builder per field protocol (io_map `[device] protocol`): (config, its devices of that
# protocol, input table, clock) -> Drivers. A new protocol's driver registers here.
ProtocolBuilder = Callable[[NodeConfig, Sequence[DeviceConfig], InputTable, Clock], Drivers]


def build_modbus_drivers(
    config: NodeConfig, devices: Sequence[DeviceConfig], live: InputTable, clock: Clock
) -> Drivers:
    """One endpoint per host:port (shared by its unit ids), one driver per device."""
    endpoints: dict[tuple[str, int], ModbusEndpoint] = {}
    drivers: dict[str, FieldDevice] = {}
    for dev in devices:
        key = (dev.host, dev.port)
        if key not in endpoints:
            endpoints[key] = ModbusEndpoint(dev.host, dev.port, timeout_s=dev.timeout_s)
        drivers[dev.name] = ModbusDevice(dev, endpoints[key], live, clock)
    return Drivers(drivers, list(endpoints.values()))  # io/failsafe.py writes Modbus itself


def build_mqtt_drivers(
    config: NodeConfig, devices: Sequence[DeviceConfig], live: InputTable, clock: Clock
) -> Drivers:
    """MicroPython sensor nodes through the node's broker, one client each
    (federation/sensor_node.py); their safe image goes out as signed commands."""
    drivers, writer = build_sensor_nodes(config.mqtt, devices, site=config.site,
                                         node=config.name, live=live, clock=clock)
    return Drivers(dict(drivers), failsafe_writers={"mqtt": writer})


def build_opcua_drivers(
    config: NodeConfig, devices: Sequence[DeviceConfig], live: InputTable, clock: Clock
) -> Drivers:
    """One session per server URL and security (shared by its devices), one driver per
    device; a ref that is not a NodeId or browse path is a ValueError naming the point."""
    from edge_runtime.io.opcua_client import OpcUaDevice  # asyncua: only for OPC UA devices
    from edge_runtime.io.opcua_endpoint import OpcUaEndpoint
    from edge_runtime.io.opcua_failsafe import write_failsafe_opcua

    endpoints: dict[tuple[str, object], OpcUaEndpoint] = {}
    drivers: dict[str, FieldDevice] = {}
    for dev in devices:
        key = (dev.url, dev.security)
        if key not in endpoints:
            endpoints[key] = OpcUaEndpoint(dev)
        drivers[dev.name] = OpcUaDevice(dev, endpoints[key], live, clock)
    return Drivers(drivers, list(endpoints.values()), {"opcua": write_failsafe_opcua})


PROTOCOL_BUILDERS: dict[str, ProtocolBuilder] = {
    "modbus": build_modbus_drivers,
    "opcua": build_opcua_drivers,
    "mqtt": build_mqtt_drivers,
}


def build_drivers(config: NodeConfig, live: InputTable, clock: Clock) -> Drivers:
    """Every device's driver, each protocol's by its builder."""
    missing = {d.protocol for d in config.devices} - set(PROTOCOL_BUILDERS)
    if missing:
        raise ValueError(f"no driver for protocol(s) {sorted(missing)}")
    out = Drivers({})
    for protocol, builder in PROTOCOL_BUILDERS.items():
        devices = [d for d in config.devices if d.protocol == protocol]
        if devices:
            built = builder(config, devices, live, clock)
            out.drivers.update(built.drivers)
            out.endpoints.extend(built.endpoints)
            out.failsafe_writers.update(built.failsafe_writers)
    return out


def assemble(
    config: NodeConfig,
    *,
    clock: Clock | None = None,
    driver_factory: DriverFactory | None = None,
    blocks: Sequence[ControlBlock] | None = None,
    interlocks: Sequence[ControlBlock] = (),
    watchdog_thread: bool = True,
    federate: bool = True,
) -> Node:
    """A node for `config.role`, ready to `await node.run()`.

    `blocks` replaces the role's control blocks (benches and tests of the scan); `interlocks`
    run before the safety layer. With `federate=False` no MQTT link or coordinator is
    attached even when the config has [mqtt] (a test that attaches its own)."""
    clock = clock or WallClock()
    live: dict[str, Sample] = {}
    built = (build_drivers(config, live, clock) if driver_factory is None
             else Drivers(driver_factory(config, live, clock)))
    drivers = built.drivers
    image = ProcessImage(config.devices, live)
    events = EventLog()
    # [audit]: every command record also goes to the hash-chained log (security/audit.py)
    audit = AuditLog(config.audit, wall=clock.wall) if config.audit is not None else None
    if audit is not None:
        audit.watch(events)  # forces, bypasses, resets, security events the node raises
    commands = CommandQueue(sink=audit.record if audit is not None else None)
    safety = build_safety_layer(config.safety, events, wall=clock.wall,
                                protections=role_protections(config))
    held: dict[str, float] = {}
    ctx = RoleContext(events=events, wall=clock.wall,
                      wall_offset=clock.wall() - clock.monotonic(), held=held)
    role_blocks = ROLE_BLOCKS[config.role](config, ctx) if blocks is None else list(blocks)
    manual = ManualOutputs(commands, events, clock.wall, safety=safety,
                           controls=RoleControls(role_blocks), held=held, rights=config.rights)
    # Outputs a device watches to see its controller alive: io_map class "heartbeat".
    heartbeats = [n for n, i in image.outputs_info.items()
                  if i.spec.output_class == "heartbeat"]
    # Estimation before control, so control blocks read the voted inputs by name.
    groups = list(safety.groups.values())
    estimation: list[ControlBlock] = [RedundancyBlock(groups)] if groups else []
    node = Node(NodeParts(
        config=config, clock=clock, live=live, events=events, commands=commands,
        drivers=drivers, endpoints=built.endpoints, image=image, safety=safety, manual=manual,
        blocks=[manual, Heartbeat(heartbeats), *estimation, *role_blocks],
        role_blocks=role_blocks, interlocks=interlocks, failsafe_writers=built.failsafe_writers,
    ), watchdog_thread=watchdog_thread)
    if config.disconnect_input or config.reconnect_input:
        node.engine.observers.append(LinkSwitch(commands, config.disconnect_input,
                                                config.reconnect_input))
    if audit is not None:
        node.attach("audit", audit, external=False)
    if federate:
        _attach_services(node, config, audit)
    return node


def _attach_services(node: Node, config: NodeConfig, audit: AuditLog | None = None) -> None:
    # One intrusion detector per node, shared by every transport (MQTT, OPC UA, HTTPS), so a
    # source blocked on one door is counted the same on the others.
    ids = IntrusionDetector(node.events, node.clock.monotonic, wall=node.clock.wall)
    coordinator_only = config.role == "site" and not config.devices
    # One verifier of signed commands per node, shared by MQTT, HTTPS and OPC UA
    # (SignedCommand): a command (its nonce) is taken once, whichever transport brings it.
    keys = config.mqtt if config.mqtt is not None and config.mqtt.command_keys else config.https
    verifier = None
    if keys is not None and keys.command_keys is not None:
        verifier = CommandVerifier(load_keys(keys.command_keys), node=config.name,
                                   site=config.site, wall=node.clock.wall,
                                   journal=keys.state_dir / NONCES, rights=node.manual.rights)
    if config.role == "site" and config.mqtt is not None and config.coordinator is not None:
        # The coordinator is the site node's MQTT presence: admission, peers, prepare.
        mqtt, site = config.mqtt, config.coordinator

        def coordinator() -> SiteCoordinator:
            return SiteCoordinator(mqtt, site=config.site, node=config.name, config=site)
        node.attach("coordinator", coordinator(), rebuild=coordinator)
    # A coordinator without plant of its own has no telemetry to send.
    if config.mqtt is not None and not (coordinator_only and config.coordinator is not None):
        link_cfg = config.mqtt

        def link() -> NodeLink:
            return NodeLink(node, link_cfg, ids=ids, verify=verifier)
        node.attach("mqtt", link(), rebuild=link)
    if config.https is not None:
        https_cfg = config.https

        def https() -> HttpsService:
            from edge_runtime.servers.https.factory import https_service  # aiohttp
            return https_service(node, https_cfg, verifier=verifier, guard=ids,
                                 audit=audit.append if audit is not None else None)
        node.attach("https", https(), rebuild=https)
    if config.opcua is not None and config.opcua.enabled:
        opcua_cfg = config.opcua

        def opcua() -> OpcUaServer:
            from edge_runtime.servers.opcua.server import OpcUaServer  # asyncua
            return OpcUaServer(node, opcua_cfg, guard=ids, verifier=verifier)
        node.attach("opcua", opcua(), rebuild=opcua)
    if node.services:
        node.attach("ids", ids, external=False)
