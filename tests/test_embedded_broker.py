"""Embedded amqtt broker: real paho-mqtt 2.x clients (MQTT 3.1.1) against it, inside our loop:
publish/subscribe, a retained message, a will on an abrupt drop, clean stop."""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.federation import embedded_broker
from edge_runtime.federation.embedded_broker import (
    EmbeddedBroker,
    EmbeddedBrokerError,
    find_mosquitto,
)

STATE = "pswd/v1/demo/n1/state"
TELEMETRY = "pswd/v1/demo/n1/telemetry"
WAIT_S = 10.0


class Client:
    """A paho client on its own network thread; callbacks land in thread-safe queues."""

    def __init__(self, port: int, client_id: str, will: tuple[str, bytes] | None = None) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.disconnected = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=mqtt.MQTTv311)
        if will:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.on_connect = lambda _c, _u, _f, rc, _p: self.events.put(("connect", rc))
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self.events.put(("subscribe", rcs))
        c.on_publish = lambda _c, _u, mid, rc, _p: self.events.put(("publish", mid))
        c.on_message = lambda _c, _u, msg: self.messages.put(msg)
        c.on_disconnect = lambda *_a: self.disconnected.set()
        self.paho = c
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()

    async def event(self, kind: str) -> Any:
        """The next callback of `kind`, waited for off the loop so the broker keeps running."""
        name, value = await asyncio.to_thread(self.events.get, True, WAIT_S)
        assert name == kind, (name, value)
        return value

    async def message(self, topic: str, payload: bytes | None = None) -> mqtt.MQTTMessage:
        """The next message on `topic` (with `payload` if given); fails after WAIT_S.

        amqtt repeats a session's retained messages when it adds a subscription, so other
        messages are passed over rather than taken for the one awaited.
        """
        while True:
            msg = await asyncio.to_thread(self.messages.get, True, WAIT_S)
            if msg.topic == topic and payload in (None, msg.payload):
                return msg

    async def subscribe(self, topic: str) -> None:
        self.paho.subscribe(topic, qos=1)
        codes = await self.event("subscribe")
        assert not codes[0].is_failure

    def drop(self) -> None:
        """Vanish without DISCONNECT, as a crashed node does: the broker must send the will."""
        self.paho.loop_stop()
        sock = self.paho.socket()
        assert isinstance(sock, socket.socket)
        sock.close()

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_round_trip_retained_and_will() -> None:
    before = asyncio.all_tasks()
    clients: list[Client] = []
    try:
        async with EmbeddedBroker(port=0) as broker:
            assert broker.port > 0 and broker.running
            node = Client(broker.port, "n1", will=(STATE, b"offline"))
            clients.append(node)
            assert (await node.event("connect")).value == 0
            # amqtt sends PUBACK before it routes and retains the message, so PUBACK alone does
            # not prove the birth is retained; its echo to the node's own subscription does.
            await node.subscribe(STATE)
            node.paho.publish(STATE, b"online", qos=1, retain=True)
            await node.event("publish")
            assert (await node.message(STATE)).payload == b"online"

            site = Client(broker.port, "site")
            clients.append(site)
            await site.event("connect")
            await site.subscribe("pswd/v1/demo/+/state")
            birth = await site.message(STATE)  # retained: delivered on subscribe
            assert (birth.topic, birth.payload, birth.retain) == (STATE, b"online", True)
            assert broker.get_status()["sessions"] == 2

            await site.subscribe(TELEMETRY)
            node.paho.publish(TELEMETRY, b"\xa1\x00\x01", qos=1)
            sample = await site.message(TELEMETRY)
            assert (sample.topic, sample.payload, sample.retain) == (TELEMETRY, b"\xa1\x00\x01",
                                                                     False)

            node.drop()
            await site.message(STATE, b"offline")  # the will

            late = Client(broker.port, "late")  # the will was retained: it replaced the birth
            clients.append(late)
            await late.event("connect")
            await late.subscribe(STATE)
            await late.message(STATE, b"offline")
        assert not broker.running
        # Stopping disconnects clients and ends every task amqtt started.
        assert await asyncio.to_thread(site.disconnected.wait, WAIT_S)
        leftover = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()}
        assert not leftover, leftover
    finally:
        for c in clients:
            c.close()


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_given_port_and_port_in_use(port: int) -> None:
    async with EmbeddedBroker(port=port) as broker:
        assert broker.port == port
        assert broker.url == f"mqtt://127.0.0.1:{port}"
        with pytest.raises(EmbeddedBrokerError, match=f"127.0.0.1:{port}"):
            await EmbeddedBroker(port=port).start()
    async with EmbeddedBroker(port=port) as again:  # the port is free again after stop
        assert again.port == port
    await again.stop()  # idempotent


def test_status_and_bad_port() -> None:
    broker = EmbeddedBroker()
    assert broker.get_status()["running"] is False
    with pytest.raises(RuntimeError, match="not running"):
        _ = broker.port
    with pytest.raises(ValueError, match="port"):
        EmbeddedBroker(port=70000)


def test_find_mosquitto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert find_mosquitto() == "/usr/sbin/mosquitto"  # installed on this machine (see notes)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(embedded_broker, "MOSQUITTO_PLACES", (tmp_path / "mosquitto",))
    assert find_mosquitto() is None
    fake = tmp_path / "mosquitto"
    fake.write_text("#!/bin/sh\n")
    assert find_mosquitto() is None  # present but not executable
    fake.chmod(0o755)
    assert find_mosquitto() == str(fake)
