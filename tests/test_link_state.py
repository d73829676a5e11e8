"""NodeLink against a real Mosquitto: birth/death retained, CBOR telemetry with aliases and
sequence numbers, rebirth, MQTT 5 and 3.1.1, TLS. Also the builders the other link tests use."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import cbor2
import pytest

from edge_runtime.assembly import NodeConfig, assemble
from edge_runtime.core.clock import WallClock
from edge_runtime.core.image import ProcessImage
from edge_runtime.core.points import Quality, Sample
from edge_runtime.federation.config import MqttConfig
from edge_runtime.federation.link import NodeLink
from edge_runtime.federation.mqtt import MqttClient
from edge_runtime.federation.state import parse_state
from edge_runtime.federation.topics import NodeTopics
from edge_runtime.messages.telemetry import (
    KEY_KIND,
    KIND_BIRTH,
    Batch,
    Birth,
    decode_batch,
    decode_birth,
)
from edge_runtime.node import Node
from tests.fakes import FakeDevice, device, load_map, write_io_map
from tests.mosquitto import Broker, Inbox, mosquitto_fixture, mosquitto_tls_fixture  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

SITE = "s1"
COUNTER = "pump1.flow"


class Counter:
    """A control block that feeds one new input sample per scan: 0, 1, 2, ..."""

    name = "counter"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.n = 0

    def step(self, image: ProcessImage, now: float, dt: float) -> None:
        # Written to the live table, so the next scan latches it (as a driver would).
        self.node.live[COUNTER] = Sample(float(self.n), Quality.GOOD, self.node.clock.wall())
        self.n += 1


def make_node(directory: Path, name: str = "cdu-1", period_ms: float = 20.0) -> Node:
    """A cdu node on fake drivers with a counter on pump1.flow; scans every period_ms."""
    io_map = load_map(write_io_map(directory))
    cfg = NodeConfig(name=name, role="cdu", site=SITE, scan_period_s=period_ms / 1000,
                     watchdog_s=2.0, devices=(device(io_map),), source=directory / "n.toml",
                     io_maps_dir=directory)
    node = assemble(cfg, clock=WallClock(), watchdog_thread=False, blocks=[], interlocks=[],
                driver_factory=lambda c, live, clock: {d.name: FakeDevice(d, live)
                                                       for d in c.devices})
    node.engine.blocks.append(Counter(node))
    return node


@asynccontextmanager
async def running(node: Node, cfg: MqttConfig, **kw: Any) -> AsyncIterator[NodeLink]:
    """Node and link running (the link attached as the assembler attaches it); stopped on exit
    (outputs safe, then the death published)."""
    link = NodeLink(node, cfg, **kw)
    node.attach("mqtt", link)
    task = asyncio.create_task(node.run())
    try:
        yield link
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def watching(cfg: MqttConfig, *topics: str, **kw: Any) -> AsyncIterator[Inbox]:
    """A subscriber collecting `topics`."""
    inbox = Inbox()
    client = MqttClient(cfg, client_id=kw.pop("client_id", "watcher"), on_message=inbox, **kw)
    for t in topics:
        client.subscribe(t, qos=1)
    client.start()
    try:
        await client.wait_subscribed(5)
        yield inbox
    finally:
        await client.stop()


class Telemetry:
    """Decodes what arrived on a telemetry topic: births by session, batches in order."""

    def __init__(self, inbox: Inbox, topic: str) -> None:
        self.births: dict[int, Birth] = {}
        self.batches: list[Batch] = []
        for m in inbox.on(topic):
            if cbor2.loads(m.payload).get(KEY_KIND) == KIND_BIRTH:
                b = decode_birth(m.payload)
                self.births[b.session] = b
            else:
                batch = decode_batch(m.payload)
                self.batches.append(decode_batch(m.payload, birth=self.births[batch.session]))

    def counter_values(self, *, historical: bool | None = None) -> list[float]:
        """The counter samples in arrival order (optionally only (non-)historical ones)."""
        out: list[float] = []
        for b in self.batches:
            if historical is None or b.historical == historical:
                birth = self.births[b.session]
                out += [s.value for n, s in b.named(birth) if n == COUNTER and s.value is not None]
        return out


def topics(node: str = "cdu-1") -> NodeTopics:
    return NodeTopics(SITE, node)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_birth_telemetry_and_death(mosquitto: Broker, tmp_path: Path,
                                         protocol: str) -> None:
    cfg = mosquitto.mqtt_config(protocol=protocol, state_dir=tmp_path / "state")
    t = topics()
    async with watching(cfg, t.state, t.telemetry) as inbox:
        node = make_node(tmp_path)
        async with running(node, cfg) as link:
            await inbox.wait_until(lambda b: len(Telemetry(b, t.telemetry).batches) >= 5,
                                   what="5 batches")
            assert link.get_status()["online"]
            assert node.get_status()["mqtt"]["online"]  # the node's status carries its link
        await inbox.wait_for(2, t.state)
    birth, death = (parse_state(m.payload) for m in inbox.on(t.state))
    assert birth.online and birth.session == 1 and birth.role == "cdu"
    units = {p.name: p.unit for p in birth.points}
    assert units == {"pump1.flow": "L/min", "pump1.speed_actual": "%", "pump1.speed_ref": "%"}
    assert not death.online and death.reason == "shutdown" and death.session == 1
    tele = Telemetry(inbox, t.telemetry)
    assert tele.births[1].points == birth.points  # CBOR birth declares the same aliases
    assert [b.seq for b in tele.batches] == list(range(len(tele.batches)))
    assert all(b.session == 1 and not b.historical for b in tele.batches)
    values = tele.counter_values()
    assert values == [float(v) for v in range(int(values[0]), int(values[0]) + len(values))]
    # A late subscriber gets the retained death and the retained alias table.
    async with watching(cfg, t.state, t.telemetry, client_id="late") as late:
        await late.wait_for(2)
        assert {m.topic for m in late.messages if m.retain} == {t.state, t.telemetry}
        assert not parse_state(late.on(t.state)[0].payload).online


async def test_rebirth_command_new_session_seq_restarts(mosquitto: Broker,
                                                        tmp_path: Path) -> None:
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state")
    t = topics()
    async with watching(cfg, t.state, t.telemetry) as inbox, \
            running(make_node(tmp_path), cfg) as link:
        await inbox.wait_until(lambda b: len(Telemetry(b, t.telemetry).batches) >= 3)
        await link.client.publish_acked(t.cmd("rebirth"), b"")
        await inbox.wait_until(lambda b: any(x.session == 2
                                             for x in Telemetry(b, t.telemetry).batches[-3:]),
                               what="batches of session 2")
        tele = Telemetry(inbox, t.telemetry)
        states = [parse_state(m.payload) for m in inbox.on(t.state)]
        assert [s.session for s in states] == [1, 2] and all(s.online for s in states)
        assert set(tele.births) == {1, 2}
        second = [b for b in tele.batches if b.session == 2]
        assert [b.seq for b in second] == list(range(len(second)))
        values = tele.counter_values()
        assert values == [float(v) for v in range(int(values[0]), int(values[0]) + len(values))]
        assert link.invalid == {}


async def test_session_survives_restart(mosquitto: Broker, tmp_path: Path) -> None:
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state")
    t = topics()
    async with watching(cfg, t.state) as inbox:
        for _ in range(2):
            async with running(make_node(tmp_path), cfg):
                await inbox.wait_until(lambda b: bool(b.messages)
                                       and parse_state(b.messages[-1].payload).online)
            await inbox.wait_until(lambda b: not parse_state(b.messages[-1].payload).online)
    sessions = [parse_state(m.payload).session for m in inbox.on(t.state)]
    assert sessions == [1, 1, 2, 2]


async def test_link_over_tls13(mosquitto_tls: Broker, tmp_path: Path) -> None:
    cfg = mosquitto_tls.mqtt_config(state_dir=tmp_path / "state")
    t = topics()
    async with watching(cfg, t.telemetry) as inbox, running(make_node(tmp_path), cfg):
        await inbox.wait_until(lambda b: len(Telemetry(b, t.telemetry).batches) >= 2)


def test_state_json_is_what_the_contract_says(tmp_path: Path) -> None:
    from edge_runtime.federation.state import Identity, birth_json, death_json
    from edge_runtime.messages.telemetry import PointDef
    who = Identity(SITE, "cdu-1", "cdu", "1.2.3")
    b = json.loads(birth_json(who, session=3, wall_s=1_800_000_000.25, period_ms=100,
                              points=[PointDef(0, "p.x", "kW")]))
    assert b == {"PSWD_version": "1.0", "timestamp": "2027-01-15T08:00:00.250Z",
                 "site": SITE, "node": "cdu-1", "role": "cdu", "firmware_version": "1.2.3",
                 "state": "online", "session": 3,
                 "telemetry": {"encoding": "cbor", "period_ms": 100,
                               "points": [{"alias": 0, "name": "p.x", "unit": "kW",
                                           "type": "float"}]}}
    d = json.loads(death_json(who, session=3, wall_s=1_800_000_000, reason="connection lost"))
    assert d["state"] == "offline" and d["reason"] == "connection lost" and d["session"] == 3
    with pytest.raises(ValueError, match="session"):
        parse_state(json.dumps({**d, "session": "3"}).encode())


async def test_link_on_the_embedded_mqtt311_broker(tmp_path: Path) -> None:
    from edge_runtime.federation.embedded_broker import EmbeddedBroker
    async with EmbeddedBroker(port=0) as broker:
        cfg = MqttConfig(host=broker.host, port=broker.port, protocol="3.1.1",
                         state_dir=tmp_path / "state", reconnect_min_s=0.1)
        t = topics()
        async with watching(cfg, t.state, t.telemetry) as inbox, \
                running(make_node(tmp_path), cfg):
            await inbox.wait_until(lambda b: len(Telemetry(b, t.telemetry).batches) >= 3,
                                   what="3 batches over amqtt")
        assert parse_state(inbox.on(t.state)[0].payload).online


async def test_assembled_node_runs_its_link_and_ends_with_a_death(mosquitto: Broker,
                                                                  tmp_path: Path) -> None:
    """The assembler attaches the link of a config with [mqtt]; node.run() runs it beside the
    scan and, when the node stops, the link publishes the death."""
    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state")
    t = topics()
    plain = make_node(tmp_path)
    node = assemble(dataclasses.replace(plain.config, mqtt=cfg), clock=WallClock(),
                    watchdog_thread=False, blocks=[],
                    driver_factory=lambda c, live, clock: {d.name: FakeDevice(d, live)
                                                           for d in c.devices})
    assert set(node.services) == {"mqtt", "ids"}
    async with watching(cfg, t.state) as inbox:
        await node.run(1.0)
        await inbox.wait_for(2, t.state)
    assert [parse_state(m.payload).online for m in inbox.on(t.state)] == [True, False]
    assert node.engine.stats.cycles > 10
    assert node.get_status()["mqtt"]["session"] >= 1
    await make_node(tmp_path).run(0.2)  # no [mqtt]: node only
