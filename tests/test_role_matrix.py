"""Every role against every command door, from the one rights table (issue 10, item 3).

* MQTT: each of the four roles of spec 10.2.2 signs, with its own key, set_output and
  release_output on each command topic (cmd/thermal_control, battery_control, grid_signal)
  aimed at an output of each class, and an A.1 on cmd/workload and the site's
  workload/prepare, through a real Mosquitto to a node with command_keys. An allowed cell
  changes the node (the output in its image, the hold, the announcement taken); a refused one
  is answered on the error topic naming the rule ("rights: ..." from the command path, or
  "role: ... may not send <kind>" from the signature check, which asks the same table).
* OPC UA: each role, and the read-only viewer, in its own SignAndEncrypt session on the node's
  server: a write of an output variable of each class, Force and Release on each class,
  ResetTrip, SetMode and SetSetpoint on each control loop. Good or BadUserAccessDenied.
* HTTPS: tests/test_https_server.py::test_every_role_on_every_endpoint_follows_the_rights_table
  (Table 3, by the same derivation); its kinds are counted below, not run again.

No expected answer is written by hand: tests/role_matrix_helpers.py derives each from
`DEFAULT_RIGHTS` (plus the channel rule on MQTT: the action and the channel must both allow the
class). Precedence and interlocks are kept neutral: no local holds, no forces or latches but
those a cell sets up, a trip every role may reset. The last test fails when a command kind of
core/authority.py has no cell on any transport.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua import Node as UaNode

from edge_runtime.core.authority import DEFAULT_RIGHTS, KINDS, LOCAL_ROLE, USER_ROLES
from edge_runtime.core.commands import ForceOutput, ReleaseForce, SetControlMode
from edge_runtime.core.points import Quality, Sample
from edge_runtime.federation import inbound
from edge_runtime.federation.link import ERROR_ANSWERS_PER_S, NodeLink
from edge_runtime.federation.topics import NodeTopics, SiteTopics
from edge_runtime.node import Node
from edge_runtime.security.signing import generate_key, sign, site_target
from edge_runtime.servers.https.control import ANNOUNCE_KINDS, CONTROL_KINDS
from edge_runtime.servers.opcua.model import METHODS
from edge_runtime.servers.opcua.users import UserStore
from tests import test_https_server
from tests.mosquitto import INSTALL_HINT, MOSQUITTO, Broker, Inbox
from tests.opcua_helpers import Rig, serving
from tests.role_matrix_helpers import (
    DEVICE,
    MQTT_ACTIONS,
    MQTT_CONTROL_CHANNELS,
    MQTT_WORKLOAD_CHANNELS,
    OPCUA_METHOD_KINDS,
    OPCUA_USERS,
    TRIP,
    LoopThread,
    MqttCell,
    OpcUaCell,
    announcement,
    answer_of,
    build_node,
    fresh_value,
    mqtt_allowed,
    mqtt_cells,
    mqtt_refusal,
    opcua_allowed,
    opcua_cells,
    point_of,
    until,
)
from tests.test_link_state import running, watching

pytestmark = pytest.mark.timeout(60)
RIGHTS = DEFAULT_RIGHTS
MQTT_CELLS = mqtt_cells()
OPCUA_CELLS = opcua_cells()
NS = "http://pswd-edge.org/UA/"
# Kinds no transport takes: the emergency disconnect's reconnect and the disconnect itself
# come from the cabinet's own inputs (node.py LinkSwitch, spec 10.4 c), not from a network.
LOCAL_ONLY = frozenset({"disconnect"})
# Output classes the node writes itself every scan (assembly/build.py: the Heartbeat block).
NODE_DRIVEN = frozenset({"heartbeat"})


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    """One event loop for the module's nodes, links, sessions and cells."""
    thread = LoopThread()
    yield thread
    thread.close()


# --- MQTT -------------------------------------------------------------------------------------

@dataclass
class MqttRig:
    """A node with command_keys linked to a real Mosquitto, a watcher of its error topic, and
    every role's signing key."""

    node: Node
    link: NodeLink
    inbox: Inbox
    keys: dict[str, bytes]
    topics: NodeTopics
    site: SiteTopics

    def errors(self) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.inbox.on(self.topics.error)]

    async def publish(self, cell: MqttCell, doc: dict[str, Any]) -> str:
        """Sign `doc` as the cell's role for its channel and publish it; returns the topic."""
        target = (site_target(self.node.config.site) if cell.channel == "prepare"
                  else self.node.config.name)
        signed = sign(self.keys[cell.role], target, cell.channel, doc, role=cell.role,
                      now=time.time())
        topic = self.site.prepare if cell.channel == "prepare" else self.topics.cmd(cell.channel)
        await self.link.client.publish_acked(topic, json.dumps(signed).encode())
        return topic

    def room_for_an_answer(self) -> bool:
        """True while the link may still answer an error this second: beyond
        ERROR_ANSWERS_PER_S it only counts them (no echo storms), so a refused cell waits."""
        window, used = self.link._error_budget
        return used < ERROR_ANSWERS_PER_S or self.node.clock.monotonic() - window >= 1.0

    async def refused(self, cell: MqttCell, doc: dict[str, Any], expected: str) -> None:
        """Publish `doc`; the answer on the error topic names `expected` (the rule)."""
        seen = len(self.inbox.on(self.topics.error))
        await self.inbox.wait_until(lambda _: self.room_for_an_answer(), 2.0,
                                    "room in the link's error-answer budget")
        topic = await self.publish(cell, doc)
        await self.inbox.wait_for(seen + 1, self.topics.error)
        answer = self.errors()[seen]
        assert answer["topic"] == topic, answer
        assert (answer["category"], answer["field"]) == ("refused", "role"), answer
        assert answer["error"].startswith(expected), (answer["error"], expected)


@pytest.fixture(scope="module")
def mqtt_rig(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MqttRig]:
    if not MOSQUITTO.exists():
        pytest.fail(f"{MOSQUITTO} is missing; {INSTALL_HINT}", pytrace=False)
    tmp = tmp_path_factory.mktemp("mqtt-matrix")
    broker = Broker(tmp / "mosquitto")
    broker.start()
    stack = contextlib.AsyncExitStack()
    try:
        keys = {role: generate_key(tmp / "keys" / f"{role}.key") for role in USER_ROLES}
        cfg = broker.mqtt_config(state_dir=tmp / "state", command_keys=tmp / "keys",
                                 require_coordinator=False)
        node = build_node(tmp, scan_ms=20)
        topics = NodeTopics(node.config.site, node.config.name)
        inbox = loop.enter(stack, watching(cfg, topics.error))
        link = loop.enter(stack, running(node, cfg))
        loop.run(inbox.wait_until(lambda _: link.get_status()["online"], 10.0, "link online"))
        yield MqttRig(node, link, inbox, keys, topics, SiteTopics(node.config.site))
    finally:
        loop.run(stack.aclose(), 30.0)
        broker.kill()


def untouched(node: Node, point: str) -> tuple[Any, ...]:
    """What a refused command must leave as it was: the hold on `point`, its held value and
    (unless the node drives the class itself: the heartbeat counts every scan) the output."""
    driven = node.image.outputs_info[point].spec.output_class in NODE_DRIVEN
    return (node.manual.holds().get(point), node.manual.manual.get(point),
            None if driven else node.image.output(point))


def order(point: str, value: float | None) -> dict[str, Any]:
    """A control command's body: set_output with a value, release_output without."""
    doc: dict[str, Any] = {"PSWD_version": "1.0", "point": point,
                           "action": "set_output" if value is not None else "release_output"}
    if value is not None:
        doc["value"] = value
    return doc


async def control_cell(rig: MqttRig, cell: MqttCell) -> None:
    node, point = rig.node, point_of(cell.cls)
    source = f"mqtt.{cell.channel}"
    refusal = mqtt_refusal(RIGHTS, cell)
    assert (refusal is None) == mqtt_allowed(RIGHTS, cell)  # the node's order, the table's say
    setting = cell.action == "set_output"
    if not setting and refusal is None:
        # this role's own hold on the point first (over the same topic): what it releases
        held = fresh_value(node.image.output(point))
        await rig.publish(cell, order(point, held))
        await until(lambda: node.image.output(point) == held
                    and node.manual.holds().get(point) == source, f"{cell.id}: hold set up")
    before = untouched(node, point)
    value = fresh_value(node.image.output(point)) if setting else None
    if refusal is not None:
        await rig.refused(cell, order(point, value), refusal)
        assert untouched(node, point) == before
        return
    errors = len(rig.errors())
    await rig.publish(cell, order(point, value))
    if setting:
        await until(lambda: node.image.output(point) == value
                    and node.manual.holds().get(point) == source, f"{cell.id}: output set")
    else:
        await until(lambda: point not in node.manual.holds(), f"{cell.id}: hold released")
    assert len(rig.errors()) == errors


async def announce_cell(rig: MqttRig, cell: MqttCell) -> None:
    node = rig.node
    refusal = mqtt_refusal(RIGHTS, cell)
    assert (refusal is None) == mqtt_allowed(RIGHTS, cell)
    workload = f"matrix-{cell.channel}-{cell.role}"
    if refusal is not None and refusal.startswith("role:"):  # the signature check's answer
        await rig.refused(cell, announcement(workload), refusal)
        assert not [r for r in node.commands.audit if workload in r.command]
        return
    await rig.publish(cell, announcement(workload))
    await until(lambda: any(workload in r.command for r in node.commands.audit),
                f"{cell.id}: the announcement checked at a scan")
    (rec,) = [r for r in node.commands.audit if workload in r.command]
    assert rec.source == f"mqtt.{cell.channel}" and cell.role in rec.command
    if refusal is None:
        assert rec.accepted, rec.reason
        (prep,) = node.manual.controls.preparations  # type: ignore[union-attr]
        await until(lambda: any(a["workload_id"] == workload
                                for a in prep.get_status()["announcements"]),
                    f"{cell.id}: the thermal preparation holds it")
    else:
        assert (rec.accepted, rec.reason) == (False, refusal)


@pytest.mark.parametrize("cell", MQTT_CELLS, ids=lambda c: c.id)
def test_mqtt(cell: MqttCell, mqtt_rig: MqttRig, loop: LoopThread) -> None:
    """One role x command topic x action (x output class) over MQTT, as the table says."""
    run = announce_cell if cell.action == "announce" else control_cell
    loop.run(run(mqtt_rig, cell))


# --- OPC UA -----------------------------------------------------------------------------------

@dataclass
class OpcUaRig:
    """A node with its OPC UA server and one SignAndEncrypt session per role (and viewer)."""

    node: Node
    server: Rig
    sessions: dict[str, Client]  # role -> its session
    users: dict[str, str]  # role -> user name
    variables: dict[str, ua.NodeId] = field(default_factory=dict)  # point -> variable
    methods: dict[str, ua.NodeId] = field(default_factory=dict)  # method -> its NodeId
    controller: ua.NodeId | None = None

    def var(self, role: str, point: str) -> UaNode:
        return self.sessions[role].get_node(self.variables[point])

    async def call(self, role: str, method: str, *args: Any) -> tuple[str, Any]:
        """(status name, result) of a controller method called in `role`'s session."""
        assert self.controller is not None, "resolve() first"
        ctrl = self.sessions[role].get_node(self.controller)
        return await answer_of(ctrl.call_method(self.methods[method], *args))

    async def submit_and_wait(self, cmd: Any, done: Any, what: str) -> None:
        """A local command (cell set-up or clean-up, through the queue), waited for."""
        if not done():
            self.node.commands.submit(cmd)
            await until(done, what)

    async def unforced(self, point: str) -> None:
        forces = self.node.safety.forces
        await self.submit_and_wait(ReleaseForce(point, role=LOCAL_ROLE, source="local"),
                                   lambda: point not in forces, f"{point} released")

    async def forced(self, point: str) -> None:
        forces = self.node.safety.forces
        await self.submit_and_wait(
            ForceOutput(point, 50.0, role=LOCAL_ROLE, source="local", expires_s=600.0,
                        reason="role matrix set-up"),
            lambda: point in forces, f"{point} forced")

    async def latched(self) -> None:
        """The matrix trip latched, its condition gone: a reset now depends on rights only."""
        state = self.node.safety.states[TRIP]
        trip = f"{DEVICE}.trip"
        if not state.latched:
            self.node.live[trip] = Sample(1.0, Quality.GOOD, self.node.clock.wall())
            await until(lambda: state.latched, "the matrix trip latched")
        self.node.live[trip] = Sample(0.0, Quality.GOOD, self.node.clock.wall())
        await until(lambda: not state.present, "the matrix trip condition gone")


@pytest.fixture(scope="module")
def opcua_rig(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpcUaRig]:
    tmp = tmp_path_factory.mktemp("opcua-matrix")
    node = build_node(tmp, scan_ms=50)
    # serving() provisions tests/opcua_helpers USERS; the matrix adds the municipal partner
    muni = secrets.token_urlsafe(16)
    UserStore(tmp / "opcua").add_user("muni", "municipal_partner", muni)
    stack = contextlib.AsyncExitStack()
    try:
        server = loop.enter(stack, serving(node, tmp))
        sessions: dict[str, Client] = {}
        for user, role in OPCUA_USERS.items():
            client = loop.run(server.client(user, password=muni if user == "muni" else None))
            stack.push_async_callback(client.disconnect)
            sessions[role] = client
        rig = OpcUaRig(node, server, sessions, {r: u for u, r in OPCUA_USERS.items()})
        loop.run(resolve(rig))
        yield rig
    finally:
        loop.run(stack.aclose(), 30.0)


async def resolve(rig: OpcUaRig) -> None:
    """The NodeIds of the controller, its methods and the matrix outputs (browsed once)."""
    client = rig.sessions[LOCAL_ROLE]
    idx = await client.get_namespace_index(NS)
    ctrl = await client.nodes.objects.get_child([f"{idx}:PSWD", f"{idx}:{rig.node.config.name}"])
    rig.controller = ctrl.nodeid
    for name in METHODS:
        rig.methods[name] = (await ctrl.get_child(f"{idx}:{name}")).nodeid
    device = await ctrl.get_child(f"{idx}:{DEVICE}")
    for point in rig.node.image.outputs_info:
        if point.startswith(f"{DEVICE}."):
            var = await device.get_child(f"{idx}:{point.split('.', 1)[1]}")
            rig.variables[point] = var.nodeid


async def write_cell(rig: OpcUaRig, cell: OpcUaCell, allowed: bool) -> str:
    node, point = rig.node, point_of(cell.cls)
    await rig.unforced(point)
    before = untouched(node, point)
    value = fresh_value(node.image.output(point))
    code, _ = await answer_of(rig.var(cell.role, point).write_value(
        ua.DataValue(ua.Variant(value, ua.VariantType.Double))))
    if code == "Good":  # applied by the scan before the write was answered
        assert node.image.output(point) == value
        assert node.manual.holds()[point] == f"opcua.{rig.users[cell.role]}"
    else:
        assert untouched(node, point) == before
    return code


async def force_cell(rig: OpcUaRig, cell: OpcUaCell, allowed: bool) -> str:
    node, point = rig.node, point_of(cell.cls)
    await rig.unforced(point)
    value = fresh_value(node.image.output(point))
    code, _ = await rig.call(cell.role, "Force", point, value, 600.0, "role matrix")
    if code == "Good":
        assert node.safety.forces.get(point) == value and node.image.output(point) == value
    else:
        assert point not in node.safety.forces
    await rig.unforced(point)
    return code


async def release_cell(rig: OpcUaRig, cell: OpcUaCell, allowed: bool) -> str:
    node, point = rig.node, point_of(cell.cls)
    await rig.forced(point)
    code, _ = await rig.call(cell.role, "Release", point)
    assert (point in node.safety.forces) == (code != "Good")
    await rig.unforced(point)
    return code


async def reset_cell(rig: OpcUaRig, cell: OpcUaCell, allowed: bool) -> str:
    await rig.latched()
    code, done = await rig.call(cell.role, "ResetTrip", TRIP)
    assert rig.node.safety.states[TRIP].latched == (code != "Good")
    if code == "Good":
        assert done == [TRIP]
    return code


async def mode_cell(rig: OpcUaRig, cell: OpcUaCell, allowed: bool) -> str:
    """SetMode / SetSetpoint on every control loop of the node: one answer for all of them."""
    loops = rig.node.manual.controls.loops  # type: ignore[union-attr]
    assert loops, "the node has no control loops to set"
    codes = set()
    for name, block in loops.items():
        status = block.get_status()["loop"]  # type: ignore[attr-defined]
        assert status["ControlMode"] == "Automatic", (name, status)
        if cell.method == "SetMode":
            code, _ = await rig.call(cell.role, "SetMode", name, "Disabled", float("nan"))
            wanted = {"ControlMode": "Disabled"}
        else:
            value = (status["AllowableMin"] + status["AllowableMax"]) / 2.0
            code, _ = await rig.call(cell.role, "SetSetpoint", name, value)
            wanted = {"ControlMode": "Override", "SetPoint": value}
        after = block.get_status()["loop"]  # type: ignore[attr-defined]
        changed = {k: after[k] for k in wanted} == wanted
        assert changed == (code == "Good"), (name, code, after)
        await rig.submit_and_wait(
            SetControlMode(name, "Automatic", role=LOCAL_ROLE, source="local"),
            lambda b=block: b.get_status()["loop"]["ControlMode"] == "Automatic",
            f"{name} back to Automatic")
        codes.add(code)
    assert len(codes) == 1, f"loops answered differently: {codes}"
    return codes.pop()


CELL_RUNNERS = {"Write": write_cell, "Force": force_cell, "Release": release_cell,
                "ResetTrip": reset_cell, "SetMode": mode_cell, "SetSetpoint": mode_cell}


@pytest.mark.parametrize("cell", OPCUA_CELLS, ids=lambda c: c.id)
def test_opcua(cell: OpcUaCell, opcua_rig: OpcUaRig, loop: LoopThread) -> None:
    """One role (or the viewer) x output write / controller method over OPC UA."""
    allowed = opcua_allowed(RIGHTS, cell)
    code = loop.run(CELL_RUNNERS[cell.method](opcua_rig, cell, allowed))
    assert code == ("Good" if allowed else "BadUserAccessDenied"), (cell.id, code)
    if not allowed:  # refused by the rights table, audited with its rule
        refused = [r for r in opcua_rig.node.commands.audit
                   if not r.accepted and r.source == f"opcua.{opcua_rig.users[cell.role]}"]
        assert refused and refused[-1].reason.startswith("rights:"), refused[-1:]


# --- every kind has its cells ------------------------------------------------------------------

def https_kinds() -> set[str]:
    """The kinds tests/test_https_server.py's role x endpoint matrix checks: the action of its
    control bodies (set_output) and their channels, and an announcement's two."""
    return ({"set_output"} | {kind for _, _, kind, _, _ in test_https_server.CONTROL.values()}
            | set(ANNOUNCE_KINDS))


def test_every_kind_a_transport_takes_has_cells_allowed_and_refused() -> None:
    # the HTTPS matrix counted here is the one that runs in test_https_server.py
    assert callable(test_https_server.test_every_role_on_every_endpoint_follows_the_rights_table)
    # the cells follow the transports' own lists: a new topic, method or endpoint fails here
    assert set(inbound.KINDS) - {"rebirth"} == {*MQTT_CONTROL_CHANNELS, *MQTT_WORKLOAD_CHANNELS}
    # SignedCommand carries the MQTT envelope (its kinds are the MQTT channel cells' kinds);
    # its signer x session checks are in tests/test_opcua_signed.py
    assert set(METHODS) == set(OPCUA_METHOD_KINDS) | {"SignedCommand"}
    assert {k for _, _, k, _, _ in test_https_server.CONTROL.values()} == set(
        CONTROL_KINDS.values())
    mqtt = {c.action for c in MQTT_CELLS} | {c.channel for c in MQTT_CELLS}
    assert mqtt >= set(MQTT_ACTIONS)
    opcua = {c.kind for c in OPCUA_CELLS}
    covered = mqtt | opcua | https_kinds()
    assert covered == set(KINDS) - LOCAL_ONLY, (
        f"kinds without a transport cell: {sorted(set(KINDS) - LOCAL_ONLY - covered)}; "
        f"cells for unknown kinds: {sorted(covered - set(KINDS))}")
    # both answers occur on each transport
    mqtt_allowed_n = sum(mqtt_allowed(RIGHTS, c) for c in MQTT_CELLS)
    opcua_allowed_n = sum(opcua_allowed(RIGHTS, c) for c in OPCUA_CELLS)
    assert 0 < mqtt_allowed_n < len(MQTT_CELLS) and 0 < opcua_allowed_n < len(OPCUA_CELLS)
    print(f"MQTT {len(MQTT_CELLS)} cells ({mqtt_allowed_n} allowed, "
          f"{len(MQTT_CELLS) - mqtt_allowed_n} refused); OPC UA {len(OPCUA_CELLS)} cells "
          f"({opcua_allowed_n} allowed, {len(OPCUA_CELLS) - opcua_allowed_n} refused)")
