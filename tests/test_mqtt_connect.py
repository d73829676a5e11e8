"""MqttClient at connect: a peer that does not speak MQTT is named within the connect timeout,
and the MQTT 5 maximum packet size keeps oversized packets off the socket.

The peers are real sockets: plain asyncio TCP servers playing an HTTP server, a silent
service, one that hangs up, and a fake broker that answers CONNACK and then announces a 50 MB
PUBLISH; and a real Mosquitto for the size limit as a broker applies it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from edge_runtime.federation.config import MqttConfig
from edge_runtime.federation.mqtt import MqttClient, encode_vbi, node_packet_limit
from edge_runtime.federation.ratelog import RateLimitedLog
from tests.mosquitto import Broker, Inbox, mosquitto_fixture  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CONNACK_V5 = bytes([0x20, 3, 0, 0, 0])  # session present 0, success, no properties


@asynccontextmanager
async def tcp_peer(handler: Handler) -> AsyncIterator[int]:
    """A TCP server on a free loopback port running `handler` per connection; its port."""
    conns: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        try:
            await handler(reader, writer)
            await reader.read()  # until the client hangs up
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in conns:
            w.close()


async def http_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    return None  # reads until the client gives up


async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    writer.close()


@pytest.mark.parametrize(("handler", "why"), [
    (http_server, "its first packet is not a CONNACK (first byte 0x48)"),
    (silent, "no CONNACK within 1 s of the TCP connection"),
    (hangs_up, "it closed the connection before a CONNACK"),
])
async def test_a_peer_that_is_not_a_broker_is_named_within_the_connect_timeout(
        handler: Handler, why: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge_runtime.federation.mqtt")
    async with tcp_peer(handler) as port:
        client = MqttClient(MqttConfig(port=port, reconnect_min_s=5.0), client_id="node",
                            connect_timeout_s=1.0)
        started = time.time()
        client.start()
        try:
            with pytest.raises(TimeoutError) as info:
                await client.wait_connected(2.0)
        finally:
            await client.stop()
    assert f"127.0.0.1:{port} is not an MQTT 5 broker: {why}" in str(info.value)
    lines = [r for r in caplog.records if "is not an MQTT 5 broker" in r.getMessage()]
    assert len(lines) == 1, "one line, not one per retry"
    assert lines[0].levelno == logging.WARNING
    assert lines[0].created - started <= 1.0 + 0.5  # within the connect timeout (+ a loop)
    assert client.connects == 0


async def test_a_packet_over_the_declared_maximum_is_refused_before_it_is_read() -> None:
    """A peer that ignores the limit: the client drops it when the length arrives."""
    sent = asyncio.Event()

    async def rogue_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # CONNECT
        writer.write(CONNACK_V5)
        # PUBLISH QoS 0 announcing a 50 MB body, then only its first bytes
        writer.write(bytes([0x30]) + encode_vbi(50_000_000) + b"\x00\x01t" + b"x" * 1000)
        await writer.drain()
        sent.set()

    async with tcp_peer(rogue_broker) as port:
        inbox = Inbox()
        states: asyncio.Queue[bool] = asyncio.Queue()
        client = MqttClient(MqttConfig(port=port, reconnect_min_s=5.0), client_id="node",
                            on_message=inbox, on_state=states.put_nowait,
                            max_packet_bytes=node_packet_limit(65536))
        client.start()
        try:
            # CONNACK and the oversized PUBLISH arrive together: the client may or may not
            # report the connection up before it drops it; it must end down, at the length.
            seen = [await asyncio.wait_for(states.get(), 5)]
            if seen[0]:
                seen.append(await asyncio.wait_for(states.get(), 5))
            assert seen[-1] is False, seen
            await asyncio.wait_for(sent.wait(), 5)
        finally:
            await client.stop()
    assert not inbox.messages
    assert any("a packet of 50000005 bytes (type 0x3) exceeds the 135168-byte maximum packet "
               "size" in e for e in client.errors), list(client.errors)


async def test_the_broker_drops_what_exceeds_the_nodes_maximum_packet_size(
        mosquitto: Broker) -> None:
    cfg = mosquitto.mqtt_config()
    inbox = Inbox()
    node = MqttClient(cfg, client_id="node", on_message=inbox,
                      max_packet_bytes=node_packet_limit(65536))
    sender = MqttClient(cfg, client_id="sender")
    node.subscribe("pswd/v1/site/node/cmd/#", qos=1)
    for c in (node, sender):
        c.start()
    try:
        await node.wait_subscribed(5)
        await sender.wait_connected(5)
        topic = "pswd/v1/site/node/cmd/thermal_control"
        await sender.publish_acked(topic, b"x" * 5_000_000)  # the broker takes it ...
        await sender.publish_acked(topic, b"y" * 100_000)  # over 64 KiB: still delivered
        await sender.publish_acked(topic, b"small")
        got = await inbox.wait_for(2)
        # ... and never sends it to the node; the node stays connected
        assert [len(m.payload) for m in got] == [100_000, 5]
        assert node.connects == 1 and node.connected
    finally:
        await sender.stop()
        await node.stop()


def test_rate_limited_log_counts_what_it_holds_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = logging.getLogger("test.ratelog")
    limited = RateLimitedLog(log, interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        for i in range(1000):  # a flood of 1,000 bad messages in 5 s
            now[0] = i * 0.005
            limited.warning("malformed", "node: invalid message %d", i)
        limited.warning("schema", "node: other kind")  # another key is not held back
        now[0] = 12.0
        limited.warning("malformed", "node: invalid message %d", 1000)
    assert [r.getMessage() for r in caplog.records] == [
        "node: invalid message 0",
        "node: other kind",
        "node: invalid message 1000 (999 more since the last line, 1001 in all)",
    ]


async def test_a_flood_of_invalid_messages_logs_one_line_per_category(
        mosquitto: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tests.test_link_state import make_node, running, topics

    cfg = mosquitto.mqtt_config(state_dir=tmp_path / "state")
    caplog.set_level(logging.WARNING, logger="edge_runtime.federation.link")
    async with running(make_node(tmp_path), cfg) as link:
        sender = MqttClient(cfg, client_id="flooder")
        sender.start()
        try:
            await sender.wait_connected(5)
            await Inbox().wait_until(lambda _: link.get_status()["online"], what="online")
            for _ in range(299):
                sender.publish(topics().cmd("grid_signal"), b"garbage", qos=1)
            await sender.publish_acked(topics().cmd("grid_signal"), b'{"value": NaN}')
            await Inbox().wait_until(lambda _: link.invalid["malformed"] == 300,
                                     what="300 counted")
        finally:
            await sender.stop()
    lines = [r.getMessage() for r in caplog.records if "invalid message on" in r.getMessage()]
    assert len(lines) == 1, lines  # was 300: one WARNING per message
    assert link.get_status()["invalid"]["malformed"] == 300  # every one still counted


@pytest.mark.timeout(60)
async def test_pswd_edge_run_and_announce_name_a_port_that_is_not_mqtt(tmp_path: Path) -> None:
    from tests.test_cli_errors import SCRIPT, dump_toml, example

    async with tcp_peer(http_server) as port:
        doc = example("rack.toml", port)  # devices and broker on the HTTP-speaking port
        config = tmp_path / "rack.toml"
        config.write_text(dump_toml({**doc, "mqtt": {"host": "127.0.0.1", "port": port}}))
        run = await asyncio.create_subprocess_exec(
            str(SCRIPT), "run", "--config", str(config), "--duration", "3",
            stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(run.communicate(), 40)
        assert run.returncode == 0
        log = err.decode()
        assert f"127.0.0.1:{port} is not an MQTT 5 broker: its first packet is not a CONNACK" \
            in log, log
        assert "Traceback" not in log
        a1 = tmp_path / "a1.json"
        a1.write_text((Path(__file__).parent / "vectors" / "annex_a" /
                       "valid_workload_announcement_minimal.json").read_text())
        started = time.monotonic()
        announce = await asyncio.create_subprocess_exec(
            str(SCRIPT), "announce", str(a1), "--port", str(port), "--timeout", "1",
            stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(announce.communicate(), 40)
        assert announce.returncode == 4
        assert "is not an MQTT 5 broker: its first packet is not a CONNACK" in err.decode()
        assert time.monotonic() - started < 15
