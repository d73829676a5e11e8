"""The MQTT sensor-node driver (federation/sensor_node.py): a sensor node's telemetry as inputs
of the rack's image, quality from birth, death and staleness, signed commands for its outputs.

Sans-IO state first, in simulated time; then a rack node assembled from
examples/rack_sensors.toml against a real Mosquitto, with a Python publisher playing the
sensor node through the runtime's own birth, death and telemetry encoders.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.assembly.config import NodeConfig
from edge_runtime.core.authority import NO_OUTPUT, Rights
from edge_runtime.core.clock import VirtualClock
from edge_runtime.core.points import Quality, Sample
from edge_runtime.federation.config import MqttConfig
from edge_runtime.federation.mqtt import MqttClient
from edge_runtime.federation.sensor_node import (
    COMMAND_KIND,
    SensorKeyError,
    SensorNodeDevice,
    build_sensor_nodes,
    command,
    load_sensor_key,
)
from edge_runtime.federation.sensor_state import NO_BROKER, NOT_BORN, SensorNodeState
from edge_runtime.federation.state import Identity, birth_json, death_json
from edge_runtime.federation.topics import NodeTopics
from edge_runtime.messages.telemetry import (
    PointType,
    TelemetryError,
    declare_points,
    encode_birth,
    encode_samples,
)
from edge_runtime.node import Node
from edge_runtime.security.signing import CommandVerifier, generate_key
from tests.mosquitto import (  # noqa: F401
    Broker,
    Inbox,
    free_port,
    mosquitto_fixture,
    mosquitto_tls_fixture,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rack_sensors.toml"
RACK = load_node_config(EXAMPLE)
SENSOR = "rs-01"
POINTS = (("inlet_temp_c", "degC"), ("outlet_temp_c", "degC"), ("leak", ""),
          ("leak_cable_fault", ""), ("valve", ""), ("overruns", ""))
DEFS = declare_points((n, u, PointType.FLOAT) for n, u in POINTS)
ALIAS = {p.name: p.alias for p in DEFS}
HEALTHY = {"inlet_temp_c": 24.5, "outlet_temp_c": 35.0, "leak": 0.0, "leak_cable_fault": 0.0,
           "valve": 1.0, "overruns": 0.0}
# The firmware's command kind is no action of the node's rights table: the board grants it.
BOARD_RIGHTS = Rights({"infrastructure_manager": {COMMAND_KIND: frozenset({NO_OUTPUT})}})


def batch(values: dict[str, float], *, session: int, seq: int, wall: float,
          historical: bool = False) -> bytes:
    """A CBOR batch as the runtime's encoder writes it."""
    return encode_samples([(ALIAS[n], Sample(v, Quality.GOOD, wall)) for n, v in values.items()],
                          session=session, seq=seq, historical=historical)


def birth(session: int, wall: float) -> bytes:
    who = Identity(RACK.site, SENSOR, "sensor", "test-0")
    return birth_json(who, session=session, wall_s=wall, points=DEFS, period_ms=50)


def death(session: int, wall: float, reason: str = "connection lost") -> bytes:
    who = Identity(RACK.site, SENSOR, "sensor", "test-0")
    return death_json(who, session=session, wall_s=wall, reason=reason)


# -- sans-IO: what the messages mean -------------------------------------------------------------

def test_quality_follows_birth_batches_staleness_and_death() -> None:
    dev = RACK.device("sensors")
    st = SensorNodeState(dev, SENSOR, stale_s=1.0)
    clock = VirtualClock()
    now, wall = clock.monotonic, clock.wall
    assert st.why == NOT_BORN
    with pytest.raises(TelemetryError, match="not born"):
        st.telemetry(batch(HEALTHY, session=3, seq=0, wall=wall()), now(), wall())

    out = st.state(birth(3, wall()), now(), wall())
    assert {s.quality for s in out.values()} == {Quality.BAD} and len(out) == 6
    assert st.telemetry(encode_birth(DEFS, session=3, time_ms=0), now(), wall()) == {}
    out = st.telemetry(batch(HEALTHY, session=3, seq=0, wall=wall()), now(), wall())
    assert out["inlet_temp_c"] == Sample(24.5, Quality.GOOD, wall())
    assert all(s.quality is Quality.GOOD for s in out.values())

    # out of its io_map range (-10..90 degC) or not of its type: flagged BAD, not used
    out = st.telemetry(batch({"inlet_temp_c": 150.0, "leak": 0.5}, session=3, seq=1,
                             wall=wall()), now(), wall())
    assert out["inlet_temp_c"].quality is Quality.BAD
    assert "outside its range -20.0..100.0" in out["inlet_temp_c"].reason
    assert out["inlet_temp_c"].value == 150.0  # kept for display
    assert "not a whole number" in out["leak"].reason
    assert out["outlet_temp_c"] == Sample(35.0, Quality.GOOD, wall())  # unchanged: still good

    # replays and batches older than the last are not the present
    assert st.telemetry(batch(HEALTHY, session=3, seq=1, wall=wall()), now(), wall()) == {}
    assert st.telemetry(batch(HEALTHY, session=3, seq=9, wall=wall(), historical=True),
                        now(), wall()) == {}
    assert st.counts["out_of_order"] == 1 and st.counts["historical"] == 1
    with pytest.raises(TelemetryError, match="unknown alias 40"):
        st.telemetry(encode_samples([(40, Sample(1.0, Quality.GOOD, wall()))], session=3,
                                    seq=5), now(), wall())
    with pytest.raises(TelemetryError, match=r"not valid CBOR|truncated"):
        st.telemetry(b"\xff\x00garbage", now(), wall())

    # silence: BAD after stale_s, once
    assert st.check_stale(now(), wall()) == {}
    clock.advance(1.01)
    out = st.check_stale(now(), wall())
    assert all(s.quality is Quality.BAD and s.reason.startswith("stale") for s in out.values())
    assert st.check_stale(now(), wall()) == {}
    out = st.telemetry(batch(HEALTHY, session=3, seq=2, wall=wall()), now(), wall())
    assert all(s.quality is Quality.GOOD for s in out.values())

    out = st.state(death(3, wall(), "keepalive expired"), now(), wall())
    assert {s.reason for s in out.values()} == {"sensor node offline: keepalive expired"}
    assert out["inlet_temp_c"].value == 24.5
    with pytest.raises(ValueError, match="node: expected 'rs-01'"):
        st.state(birth(4, wall()).replace(b'"rs-01"', b'"rs-02"'), now(), wall())


def test_a_sensor_node_never_heard_reads_bad_after_timeout_saying_why() -> None:
    st = SensorNodeState(RACK.device("sensors"), SENSOR, stale_s=1.0)
    st.fresh_at = 10.0  # the driver's start
    assert st.check_stale(10.9, 0.0) == {}  # unread: inside the start-up grace
    out = st.check_stale(11.1, 0.0)
    assert {s.reason for s in out.values()} == {NOT_BORN} and len(out) == 6
    other = SensorNodeState(RACK.device("sensors"), SENSOR, stale_s=1.0)
    out = other.check_stale(1.1, 0.0, connected=False)
    assert {s.reason for s in out.values()} == {NO_BROKER}


def test_a_batch_of_a_session_before_its_birth_is_refused() -> None:
    st = SensorNodeState(RACK.device("sensors"), SENSOR, stale_s=1.0)
    st.state(birth(3, 0.0), 0.0, 0.0)
    with pytest.raises(TelemetryError, match="session 4, but the birth is of session 3"):
        st.telemetry(batch(HEALTHY, session=4, seq=0, wall=0.0), 0.0, 0.0)


def test_a_command_is_signed_for_the_sensor_node_and_its_kind(tmp_path: Path) -> None:
    key = generate_key(tmp_path / f"{SENSOR}.key")
    assert load_sensor_key(tmp_path, SENSOR) == key
    payload = json.loads(command(key, SENSOR, "valve", 0.0, time.time()))
    assert payload["point"] == "valve" and payload["value"] == 0 and payload["role"]
    verify = CommandVerifier({"infrastructure_manager": key}, node=SENSOR, wall=time.time,
                             rights=BOARD_RIGHTS)
    assert verify(COMMAND_KIND, dict(payload)) is None
    assert verify(COMMAND_KIND, dict(payload)) == "nonce: already used (a replay)"
    other = CommandVerifier({"infrastructure_manager": key}, node="rs-02", wall=time.time,
                            rights=BOARD_RIGHTS)
    assert "signature: does not match" in str(other(COMMAND_KIND, dict(payload)))
    tampered = {**payload, "value": 1}
    assert "signature: does not match" in str(verify(COMMAND_KIND, tampered))


def test_build_errors_name_the_device_and_the_key(tmp_path: Path) -> None:
    live: dict[str, Sample] = {}
    clock = VirtualClock()
    with pytest.raises(ValueError, match=r"devices sensors: .* add an \[mqtt\] section"):
        build_sensor_nodes(None, RACK.devices, site="demo", node="r", live=live, clock=clock)
    no_keys = dataclasses.replace(RACK.mqtt or MqttConfig(), sensor_keys=None)
    with pytest.raises(ValueError, match=r"sensors: .*\[mqtt\] sensor_keys .* rs-01.key"):
        build_sensor_nodes(no_keys, RACK.devices, site="demo", node="r", live=live,
                           clock=clock)
    with_dir = dataclasses.replace(no_keys, sensor_keys=tmp_path)
    with pytest.raises(SensorKeyError, match=r"rs-01\.key"):
        build_sensor_nodes(with_dir, RACK.devices, site="demo", node="r", live=live,
                           clock=clock)
    (tmp_path / "rs-01.key").write_text("00" * 32)
    (tmp_path / "rs-01.key").chmod(0o644)
    with pytest.raises(SensorKeyError, match="chmod 600"):
        load_sensor_key(tmp_path, SENSOR)


# -- against a real broker --------------------------------------------------------------------

class PySensor:
    """A sensor node in Python: births and death (its will) as the runtime writes them, CBOR
    telemetry through the runtime's encoder; collects what arrives on its cmd/output."""

    def __init__(self, cfg: MqttConfig, session: int = 7) -> None:
        self.topics = NodeTopics(RACK.site, SENSOR)
        self.session, self.seq = session, 0
        self.commands = Inbox()
        self.client = MqttClient(cfg, client_id=SENSOR, on_message=self.commands,
                                 on_connect=self._born)
        self.client.set_will(self.topics.state, death(session, time.time()), qos=1, retain=True)
        self.client.subscribe(f"{self.topics.base}/cmd/output", qos=1)

    def _born(self, client: MqttClient) -> None:  # network thread, before anything else
        client.publish(self.topics.state, birth(self.session, time.time()), 1, True)
        cbor = encode_birth(DEFS, session=self.session, time_ms=int(time.time() * 1000))
        client.publish(self.topics.telemetry, cbor, 1, True)

    async def start(self) -> None:
        self.client.start()
        await self.client.wait_subscribed(5)

    def send(self, values: dict[str, float]) -> None:
        self.publish_raw(batch(values, session=self.session, seq=self.seq, wall=time.time()))
        self.seq += 1

    def publish_raw(self, payload: bytes) -> None:
        assert self.client.publish(self.topics.telemetry, payload, 1) is not None


def rack_config(broker: Broker, keys: Path) -> NodeConfig:
    mqtt = broker.mqtt_config(sensor_keys=keys)
    dev = dataclasses.replace(RACK.device("sensors"), poll_s=0.05, timeout_s=0.4, refresh_s=0.3)
    return dataclasses.replace(RACK, scan_period_s=0.02, devices=(dev,), mqtt=mqtt)


@contextlib.asynccontextmanager
async def rack_running(cfg: NodeConfig) -> AsyncIterator[Node]:
    node = assemble(cfg, watchdog_thread=False, federate=False)
    task = asyncio.create_task(node.run())
    try:
        driver = node.drivers["sensors"]
        assert isinstance(driver, SensorNodeDevice)
        # live batches are not retained: a test's first one must not beat the subscription
        await asyncio.wait_for(_started(driver), 5)
        await driver.client.wait_subscribed(5)
        yield node
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _started(driver: SensorNodeDevice) -> None:
    while driver.client.get_status()["connects"] == 0 and not driver.client.connected:
        await asyncio.sleep(0.01)  # run() starts the client at the driver's first poll phase


async def scan_until(node: Node, pred: Callable[[], bool], what: str,
                     timeout: float = 10.0) -> None:
    """Wait, scan by scan, until `pred()` holds (bounded)."""
    seen = asyncio.Event()

    class Watch:
        name = "watch"

        def step(self, *_args: object) -> None:
            if pred():
                seen.set()

    node.engine.observers.append(Watch())
    try:
        await asyncio.wait_for(seen.wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"{what} not within {timeout} s: "
                             f"{node.drivers['sensors'].get_status()}") from None
    finally:
        node.engine.observers.pop()


def quality(node: Node, point: str = "sensors.inlet_temp_c") -> Quality:
    return node.image.sample(point).quality


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_key(tmp_path / "keys" / f"{SENSOR}.key")
    return tmp_path / "keys"


@pytest.mark.anyio
async def test_birth_gives_good_values_and_death_reads_bad(mosquitto: Broker, keys: Path) -> None:
    async with rack_running(rack_config(mosquitto, keys)) as node:
        await scan_until(node, lambda: "birth" in node.image.sample("sensors.leak").reason,
                         "BAD before the birth, saying so")
        sensor = PySensor(mosquitto.mqtt_config())
        await sensor.start()
        sensor.send(HEALTHY)
        await scan_until(node, lambda: quality(node) is Quality.GOOD, "GOOD after the birth")
        assert node.image.value("sensors.inlet_temp_c") == 24.5
        assert node.image.value("sensors.valve") == 1.0
        sensor.client.abort()  # the connection dies without DISCONNECT: the broker sends the will
        await scan_until(node, lambda: quality(node) is Quality.BAD, "BAD after the death")
        sample = node.image.sample("sensors.leak")
        assert sample.reason == "sensor node offline: connection lost", sample
        await sensor.client.stop()
        status = node.drivers["sensors"].get_status()
        assert status["counts"]["deaths"] == 1 and not status["online"]


@pytest.mark.anyio
async def test_silence_reads_bad_and_bad_messages_leave_the_scan_alone(
        mosquitto: Broker, keys: Path) -> None:
    async with rack_running(rack_config(mosquitto, keys)) as node:
        sensor = PySensor(mosquitto.mqtt_config())
        await sensor.start()
        sensor.send(HEALTHY)
        await scan_until(node, lambda: quality(node) is Quality.GOOD, "GOOD")
        t0 = time.monotonic()
        await scan_until(node, lambda: quality(node) is Quality.BAD, "stale")
        assert node.image.sample("sensors.leak").reason.startswith("stale: no telemetry batch")
        assert 0.4 <= time.monotonic() - t0 < 2.0
        sensor.send(HEALTHY)
        await scan_until(node, lambda: quality(node) is Quality.GOOD, "GOOD again")

        cycles, faults = node.engine.stats.cycles, node.engine.stats.block_faults
        sensor.publish_raw(b"\xa2\x00garbage")
        sensor.publish_raw(encode_samples([(99, Sample(1.0, Quality.GOOD, time.time()))],
                                          session=sensor.session, seq=sensor.seq))
        sensor.send({"inlet_temp_c": 25.0})
        await scan_until(node, lambda: node.image.value("sensors.inlet_temp_c") == 25.0,
                         "the next good batch")
        driver = node.drivers["sensors"]
        assert isinstance(driver, SensorNodeDevice)
        assert driver.errors["bad_telemetry"] == 2, driver.get_status()
        assert "unknown alias 99" in driver.last_error or driver.errors["bad_telemetry"] == 2
        assert quality(node, "sensors.leak") is Quality.GOOD  # the bad messages changed nothing
        assert node.engine.stats.cycles > cycles and node.engine.stats.block_faults == faults
        await sensor.client.stop()


@pytest.mark.anyio
async def test_a_leak_isolates_through_a_signed_command(mosquitto: Broker, keys: Path) -> None:
    key = load_sensor_key(keys, SENSOR)
    verify = CommandVerifier({"infrastructure_manager": key}, node=SENSOR, wall=time.time,
                             rights=BOARD_RIGHTS)
    sensor = PySensor(mosquitto.mqtt_config())
    await sensor.start()
    topic = f"{sensor.topics.base}/cmd/output"

    def valve_commands() -> list[dict[str, object]]:
        return [json.loads(m.payload) for m in sensor.commands.on(topic)]

    async with rack_running(rack_config(mosquitto, keys)) as node:
        sensor.send(HEALTHY)
        await scan_until(node, lambda: quality(node) is Quality.GOOD, "GOOD")
        await sensor.commands.wait_until(lambda _: any(c["value"] == 1 for c in valve_commands()),
                                         what="the valve held open (its failsafe)")
        sensor.send({**HEALTHY, "leak": 1.0})
        await scan_until(node, lambda: node.image.output("sensors.valve") == 0.0, "isolation")
        await sensor.commands.wait_until(lambda _: valve_commands()[-1]["value"] == 0,
                                         what="valve command 0")
        n = len(valve_commands())
        # refreshed every refresh_ms (0.3 s) while unchanged
        await sensor.commands.wait_until(lambda _: len(valve_commands()) >= n + 2, timeout=3.0,
                                         what="refreshes")
    # the node stopped (its driver first): the safe image, isolation latched, went out over
    # a fresh connection
    driver = node.drivers["sensors"]
    assert isinstance(driver, SensorNodeDevice)
    sent = driver.client.published  # acknowledged or not: each reaches the board
    await sensor.commands.wait_until(lambda _: len(valve_commands()) == sent + 1, timeout=3.0,
                                     what="the safe image at shutdown")
    for doc in valve_commands():
        assert verify(COMMAND_KIND, doc) is None, doc
    assert valve_commands()[-1]["value"] == 0
    await sensor.client.stop()


@pytest.mark.anyio
async def test_broker_loss_reads_bad_and_a_reconnect_resends_the_outputs(
        mosquitto: Broker, keys: Path) -> None:
    sensor = PySensor(mosquitto.mqtt_config())
    await sensor.start()
    topic = f"{sensor.topics.base}/cmd/output"
    async with rack_running(rack_config(mosquitto, keys)) as node:
        sensor.send(HEALTHY)
        await scan_until(node, lambda: quality(node) is Quality.GOOD, "GOOD")
        mosquitto.kill()  # as a crash: no wills, nothing retained survives
        await scan_until(node, lambda: quality(node) is Quality.BAD, "BAD without a broker")
        assert node.image.sample("sensors.leak").reason.startswith("broker connection lost")
        sent = len(sensor.commands.on(topic))
        mosquitto.start()
        await sensor.client.wait_connected(10)  # it births again on its new connection

        async def telemetry() -> None:  # batches on, as a board sends them
            while True:
                sensor.send(HEALTHY)
                await asyncio.sleep(0.1)

        sending = asyncio.create_task(telemetry())
        try:
            await scan_until(node, lambda: quality(node) is Quality.GOOD,
                             "GOOD after the broker", timeout=10.0)
        finally:
            sending.cancel()
        await sensor.commands.wait_until(lambda box: len(box.on(topic)) > sent,
                                         what="the valve command resent")
    await sensor.client.stop()


@pytest.mark.anyio
async def test_over_tls_with_the_nodes_certificate(mosquitto_tls: Broker, keys: Path) -> None:
    sensor = PySensor(mosquitto_tls.mqtt_config())
    await sensor.start()
    topic = f"{sensor.topics.base}/cmd/output"
    async with rack_running(rack_config(mosquitto_tls, keys)) as node:
        sensor.send(HEALTHY)
        await scan_until(node, lambda: quality(node) is Quality.GOOD, "GOOD over TLS 1.3")
        assert node.drivers["sensors"].get_status()["connection"]["tls"]
    # the safe image at shutdown goes over a fresh TLS connection too
    await sensor.commands.wait_until(lambda box: bool(box.on(topic)), what="a valve command")
    await sensor.client.stop()


def test_the_safe_image_writer_reports_an_unreachable_broker(keys: Path) -> None:
    cfg = dataclasses.replace(RACK, mqtt=MqttConfig(port=free_port(), sensor_keys=keys))
    _, writer = build_sensor_nodes(cfg.mqtt, cfg.devices, site="demo", node="r", live={},
                                   clock=VirtualClock())
    t0 = time.monotonic()
    errors = writer(cfg.devices, 0.5, {"sensors.valve": 0.0})
    assert len(errors) == 1 and "sensor nodes via 127.0.0.1" in errors[0], errors
    assert time.monotonic() - t0 < 2.0
