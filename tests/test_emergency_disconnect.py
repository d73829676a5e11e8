"""Emergency disconnection (spec 10.4 c, issue 10 item 6) through a real Mosquitto: the
infrastructure manager, or the cabinet's disconnect input, cuts every external link while the
scan and the safety layer carry on; every remote hold goes back to local control; nothing from
outside acts while cut; reconnection needs an explicit local command (or the reconnect input).
Each path that could break the claim is tried: a role without the right, a remote reconnect, a
bad switch input, a repeated cut, a reconnect while the old link is still closing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.core.clock import WallClock
from edge_runtime.core.commands import LinkCommand, SetOutput
from edge_runtime.core.points import Quality
from edge_runtime.core.ports import FieldDevice, InputTable
from edge_runtime.federation.mqtt import MqttClient
from edge_runtime.federation.state import parse_state
from edge_runtime.node import Node
from tests.fakes import FakeDevice
from tests.mosquitto import Broker, Inbox, mosquitto_fixture  # noqa: F401
from tests.test_command_authority_mqtt import T, order
from tests.test_link_state import watching
from tests.test_rights import NODE

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(40)]

PANEL = """
[devices.panel]
io_map = "leak_detector"
endpoint = "127.0.0.1:15020"
unit_id = 3
"""
SWITCHES = 'disconnect_input = "panel.leak_state"\nreconnect_input = "panel.status"\n'


def linked_node(mosquitto: Broker, tmp_path: Path) -> tuple[Node, dict[str, FakeDevice]]:
    path = tmp_path / "node.toml"
    text = NODE.replace("scan_period_ms = 100", "scan_period_ms = 20\n" + SWITCHES) + PANEL
    path.write_text(text)
    cfg = load_node_config(path)
    mqtt = mosquitto.mqtt_config(state_dir=tmp_path / "state", require_coordinator=False)
    fakes: dict[str, FakeDevice] = {}

    def factory(c: object, live: InputTable, clk: object) -> dict[str, FieldDevice]:
        fakes.update({d.name: FakeDevice(d, live) for d in cfg.devices})
        return dict(fakes)

    node = assemble(dataclasses.replace(cfg, mqtt=mqtt), clock=WallClock(), blocks=[],
                    watchdog_thread=False, driver_factory=factory)
    fakes["panel"].set_input("leak_state", 0.0)
    fakes["panel"].set_input("status", 0.0)
    return node, fakes


@asynccontextmanager
async def run(node: Node) -> AsyncIterator[None]:
    task = asyncio.create_task(node.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def state_of(inbox: Inbox) -> str:
    return "online" if parse_state(inbox.on(T.state)[-1].payload).online else "offline"


async def scans_pass(node: Node, n: int) -> None:
    start = node.engine.stats.cycles

    async def _wait() -> None:
        while node.engine.stats.cycles < start + n:
            await asyncio.sleep(0.005)
    await asyncio.wait_for(_wait(), 5)


async def command(mosquitto: Broker, tmp_path: Path, value: float) -> None:
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "sender", require_coordinator=False)
    sender = MqttClient(cfg, client_id=f"sender-{value}")
    sender.start()
    try:
        await sender.wait_connected(5)
        doc = {**order("battery.w_set_kw", value), "timestamp": "2026-01-01T00:00:00Z"}
        await sender.publish_acked(T.cmd("battery_control"), json.dumps(doc).encode())
    finally:
        await sender.stop()


async def test_the_manager_cuts_every_link_and_only_a_local_command_restores_them(
        mosquitto: Broker, tmp_path: Path) -> None:
    node, _ = linked_node(mosquitto, tmp_path)
    async with watching(mosquitto.mqtt_config(), T.state, T.error) as inbox, run(node):
        await inbox.wait_until(lambda b: bool(b.on(T.state)) and state_of(b) == "online",
                               what="birth")
        await command(mosquitto, tmp_path, -20.0)
        await inbox.wait_until(lambda _: node.image.output("battery.w_set_kw") == -20.0,
                               what="remote hold applied")

        # a role without the right is refused and audited; nothing is cut
        node.commands.submit(LinkCommand("disconnect", role="grid_operator", source="opcua.x"))
        await scans_pass(node, 2)
        assert not node.links_cut
        assert any("disconnect" in r.command and not r.accepted for r in node.commands.audit)

        node.commands.submit(LinkCommand("disconnect", role="infrastructure_manager",
                                         source="https.10.0.0.5", reason="intrusion on VLAN 20"))
        await inbox.wait_until(lambda b: state_of(b) == "offline", what="death after the cut")
        assert node.links_cut == "intrusion on VLAN 20"
        assert node.manual.holds() == {}  # the remote hold went back to local control
        assert [e for e in node.events.recent(50) if e.code == "emergency_disconnect"]
        # a remote command that reaches the queue after the cut (a transport still winding
        # down, or queued just before) is refused by the command path itself
        node.commands.submit(SetOutput("battery.w_set_kw", -40.0, source="mqtt.battery_control",
                                       role="infrastructure_manager"))
        await scans_pass(node, 2)
        late = [r for r in node.commands.audit if "-40.0" in r.command]
        assert late and not late[-1].accepted and late[-1].reason.startswith("links: cut")
        before = node.engine.stats.cycles
        await command(mosquitto, tmp_path, -30.0)  # nobody listens now
        await scans_pass(node, 5)
        assert node.engine.stats.cycles > before  # the scan runs on
        assert node.image.output("battery.w_set_kw") != -30.0
        assert node.get_status()["links_cut"] == "intrusion on VLAN 20"

        # a second cut is harmless; a remote reconnect is refused
        node.commands.submit(LinkCommand("disconnect", role="infrastructure_manager"))
        node.commands.submit(LinkCommand("reconnect", role="infrastructure_manager",
                                         source="https.10.0.0.5"))
        await scans_pass(node, 2)
        assert node.links_cut == "intrusion on VLAN 20"
        refused = [r for r in node.commands.audit if "reconnect" in r.command]
        assert refused and not refused[-1].accepted and "local command only" in refused[-1].reason

        node.commands.submit(LinkCommand("reconnect"))  # the panel: local, no role
        await inbox.wait_until(lambda b: state_of(b) == "online", what="rebirth after reconnect")
        assert node.links_cut == ""
        await command(mosquitto, tmp_path, -30.0)
        await inbox.wait_until(lambda _: node.image.output("battery.w_set_kw") == -30.0,
                               what="remote command applies again")


async def test_the_cabinet_switches_cut_and_restore_on_rising_edges_only(
        mosquitto: Broker, tmp_path: Path) -> None:
    node, fakes = linked_node(mosquitto, tmp_path)
    panel = fakes["panel"]
    async with watching(mosquitto.mqtt_config(), T.state) as inbox, run(node):
        await inbox.wait_until(lambda b: bool(b.on(T.state)) and state_of(b) == "online",
                               what="birth")
        panel.set_input("leak_state", None, Quality.BAD)  # a broken wire is not an edge
        await scans_pass(node, 3)
        assert not node.links_cut
        panel.set_input("leak_state", 1.0)
        await inbox.wait_until(lambda b: state_of(b) == "offline", what="cut by the switch")
        assert node.links_cut == "local input panel.leak_state"
        panel.set_input("leak_state", 0.0)  # releasing the switch does not reconnect
        await scans_pass(node, 5)
        assert node.links_cut and state_of(inbox) == "offline"
        panel.set_input("status", 1.0)  # the reconnect key: explicit
        await inbox.wait_until(lambda b: state_of(b) == "online", what="reconnected")
        assert node.links_cut == ""


async def test_a_reconnect_right_after_the_cut_still_comes_back(mosquitto: Broker,
                                                                tmp_path: Path) -> None:
    """The cut link may still be publishing its death when the reconnect comes: the fresh
    link starts once the old one has closed, never beside it."""
    node, _ = linked_node(mosquitto, tmp_path)
    async with watching(mosquitto.mqtt_config(), T.state) as inbox, run(node):
        await inbox.wait_until(lambda b: bool(b.on(T.state)) and state_of(b) == "online",
                               what="birth")
        node.disconnect("test")
        node.reconnect()
        await inbox.wait_until(lambda b: len([m for m in b.on(T.state)
                                              if parse_state(m.payload).online])
                               >= 2, what="second birth")
        await scans_pass(node, 3)
        assert state_of(inbox) == "online" and not node.links_cut


def test_an_unknown_switch_input_is_named(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(NODE.replace("scan_period_ms = 100",
                                 'scan_period_ms = 100\ndisconnect_input = "panel.key"'))
    with pytest.raises(Exception, match=r"\[node\] disconnect_input: unknown input 'panel.key'"):
        load_node_config(path)
