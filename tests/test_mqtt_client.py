"""MqttClient against a real Mosquitto: MQTT 5 and 3.1.1, TLS 1.3 with client certificates,
reconnect after a broker crash, wills, MQTT 5 request/response properties."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from edge_runtime.federation.mqtt import MqttClient
from tests.mosquitto import Broker, Inbox, mosquitto_fixture, mosquitto_tls_fixture  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_publish_subscribe_round_trip(mosquitto: Broker, protocol: str) -> None:
    cfg = mosquitto.mqtt_config(protocol=protocol)
    inbox = Inbox()
    sub = MqttClient(cfg, client_id=f"sub-{protocol}", on_message=inbox)
    pub = MqttClient(cfg, client_id=f"pub-{protocol}")
    sub.subscribe("t/#", qos=1)
    sub.start()
    pub.start()
    try:
        await sub.wait_subscribed(5)
        await pub.wait_connected(5)
        await pub.publish_acked("t/a", b"\x00\x01binary", qos=1)
        msgs = await inbox.wait_for(1)
        assert (msgs[0].topic, msgs[0].payload, msgs[0].qos) == ("t/a", b"\x00\x01binary", 1)
        assert pub.get_status()["connected"] and pub.published == 1
    finally:
        await pub.stop()
        await sub.stop()
    assert not pub.connected
    assert pub.publish("t/a", b"x") is None  # offline: refused, not queued


async def test_mqtt5_response_topic_and_correlation_data(mosquitto: Broker) -> None:
    cfg = mosquitto.mqtt_config()
    inbox = Inbox()
    sub = MqttClient(cfg, client_id="req-sub", on_message=inbox)
    pub = MqttClient(cfg, client_id="req-pub")
    sub.subscribe("req", qos=1)
    for c in (sub, pub):
        c.start()
    try:
        await sub.wait_subscribed(5)
        await pub.wait_connected(5)
        await pub.publish_acked("req", b"{}", response_topic="resp/1", correlation_data=b"c-1")
        (msg,) = await inbox.wait_for(1)
        assert msg.response_topic == "resp/1" and msg.correlation_data == b"c-1"
    finally:
        await pub.stop()
        await sub.stop()


async def test_tls13_with_client_certificate(mosquitto_tls: Broker) -> None:
    inbox = Inbox()
    client = MqttClient(mosquitto_tls.mqtt_config(), client_id="tls-node", on_message=inbox)
    client.subscribe("secure/x")
    client.start()
    try:
        await client.wait_subscribed(5)
        # Many publishes from the loop thread while the network thread reads the same SSL
        # socket: they must not interleave on it (they did once: "bad length").
        for i in range(300):
            client.publish("secure/x", b"%d" % i, qos=1)
        await client.publish_acked("secure/x", b"ok")
        msgs = await inbox.wait_for(301)
        assert [m.payload for m in msgs] == [b"%d" % i for i in range(300)] + [b"ok"]
    finally:
        await client.stop()


async def test_tls_client_without_certificate_is_refused(mosquitto_tls: Broker) -> None:
    assert mosquitto_tls.pki is not None
    # Independent check with the ssl module: TLS 1.3 ends the handshake before the server
    # checks for a certificate, so the refusal (an alert, or the close) comes on first read.
    ctx = ssl.create_default_context(cafile=str(mosquitto_tls.pki.ca))
    connect = bytes.fromhex("100c00044d5154540402003c0000")  # MQTT 3.1.1 CONNECT, empty id
    with socket.create_connection((mosquitto_tls.host, mosquitto_tls.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() == "TLSv1.3"
        try:
            tls.sendall(connect)
            answer = tls.recv(16)
        except (ssl.SSLError, ConnectionResetError) as exc:
            answer = str(exc).encode()
        assert not answer.startswith(b"\x20"), "the broker sent a CONNACK"
    assert "without a certificate" in mosquitto_tls.log_tail() or "certificate" in \
        mosquitto_tls.log_tail().lower()
    # Our client, certificate left out: never connected, and it says why.
    client = MqttClient(mosquitto_tls.mqtt_config(), client_id="anonymous",
                        ssl_context=ssl.create_default_context(cafile=str(mosquitto_tls.pki.ca)))
    client.start()
    try:
        with pytest.raises(TimeoutError, match=r"certificate required|EOF occurred"):
            await client.wait_connected(2)
        assert client.connects == 0
    finally:
        await client.stop()


def test_tls12_client_is_refused(mosquitto_tls: Broker) -> None:
    assert mosquitto_tls.pki is not None
    ctx = ssl.create_default_context(cafile=str(mosquitto_tls.pki.ca))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(mosquitto_tls.pki.client_cert, mosquitto_tls.pki.client_key)
    with socket.create_connection((mosquitto_tls.host, mosquitto_tls.port), timeout=5) as raw, \
            pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL"):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")


async def test_reconnects_and_resubscribes_after_broker_crash(mosquitto: Broker) -> None:
    cfg = mosquitto.mqtt_config()
    inbox = Inbox()
    states: list[bool] = []
    sub = MqttClient(cfg, client_id="survivor", on_message=inbox, on_state=states.append)
    sub.subscribe("after/crash", qos=1)
    sub.start()
    pub = MqttClient(cfg, client_id="pub")
    pub.start()
    try:
        await sub.wait_connected(5)
        mosquitto.kill()
        while sub.connected or pub.connected:
            await asyncio.sleep(0.01)
        mosquitto.start()
        await sub.wait_subscribed(10)
        await pub.wait_connected(10)
        await pub.publish_acked("after/crash", b"again")
        (msg,) = await inbox.wait_for(1)
        assert msg.payload == b"again"
        assert sub.connects == 2 and sub.disconnects == 1 and states[:2] == [True, False]
    finally:
        await pub.stop()
        await sub.stop()


async def test_will_on_abrupt_disconnect_not_on_clean_stop(mosquitto: Broker) -> None:
    cfg = mosquitto.mqtt_config(keepalive_s=5)
    inbox = Inbox()
    watcher = MqttClient(cfg, client_id="watcher", on_message=inbox)
    watcher.subscribe("will/#")
    watcher.start()
    clean = MqttClient(cfg, client_id="clean")
    clean.set_will("will/clean", b"dead")
    crash = MqttClient(cfg, client_id="crash")
    crash.set_will("will/crash", b"dead", retain=False)
    for c in (clean, crash):
        c.start()
    try:
        await watcher.wait_subscribed(5)
        for c in (clean, crash):
            await c.wait_connected(5)
        await clean.stop()
        crash._stop.set()  # keep the thread from reconnecting
        crash.abort()
        msgs = await inbox.wait_for(1)
        assert [m.topic for m in msgs] == ["will/crash"]
    finally:
        await crash.stop()
        await watcher.stop()
