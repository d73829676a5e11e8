"""MQTT field-device driver for the MicroPython rack sensor nodes (firmware/): a sensor node's
telemetry becomes inputs of the rack's process image, its outputs signed commands.

A device whose io_map says `protocol = "mqtt"`, with `endpoint = "mqtt:<sensor id>"`, is a
sensor node reached through the node's own broker ([mqtt]). Each io_map point's `ref` is the
point's name in the sensor node's telemetry birth. The contract (firmware/README.md,
"Federation contract"), under `pswd/v1/{site}/{sensor id}/`:

    state        JSON birth / death (retained, QoS 1, the death is the will): federation/state.py
    telemetry    CBOR birth and batches, decoded by edge_runtime.messages.telemetry unchanged
    alarm, error JSON records of the board: logged and counted
    cmd/output   in: {"PSWD_version", "point": ref, "value": number} in the envelope of
                 security/signing.py, kind "output", signed for the sensor id with the key
                 `[mqtt] sensor_keys/<sensor id>.key`, role infrastructure_manager

Quality (the rules are sans-IO, in federation/sensor_state.py): GOOD from a batch of the
session the sensor node is born in. BAD, naming why:
- before its first birth, once `timeout_ms` passed after the start (until then the inputs
  are unread, inside the safety layer's start-up grace);
- after its death (the reason its will gives);
- when no batch came for the device's `timeout_ms` (checked every timeout_ms / 4; `poll_ms`
  is the board's telemetry period and the retry period of a command that failed);
- while this driver's broker connection is down;
- for a value the board sends bad, not finite, not of the point's `type` or outside its
  io_map min..max: flagged and not used (control and interlocks never act on it).
Values are taken as sent (scale and offset do not apply to a ref point). Samples are stamped
with this node's clock at arrival: a board's clock must not date the image. Historical
(replayed) batches and batches older than the last one taken are counted, not used: they are
not the present. Invalid messages (bad CBOR, an unknown alias, a batch before its birth) are
logged (rate-limited), counted by kind in get_status(), and never reach the scan. The board's
alarms and refusals (its error topic) are logged and counted too.

Outputs: the scan's stage() only records values (io/blocks.OutputSchedule, the Modbus
driver's); a writer task sends one signed command per output that changed, every output every
`refresh_ms`, all again after a reconnect or a rebirth of the sensor node, and the safe image
when staging stops for max_hold_s. Each waits for the broker's PUBACK on its own task: the
scan never waits. The board keeps its own failsafe and max-hold (firmware/), so a rack node
that dies still leaves the valve safe; at shutdown, and from the watchdog thread when the loop
is frozen, `blocking_writer` sends the safe image over a fresh connection.

Own client, not the NodeLink's: each sensor device opens its own MqttClient to the same broker
with the same TLS settings (client id "<node client id>.<device>"). The driver then lives as
long as the scan's drivers, not as long as the link (which starts after and stops after them,
and may be absent: `assemble(federate=False)`), and a slow telemetry path or an outbox replay
on the link never delays a sensor node's leak reading. The cost is one more TCP connection
per sensor node, which a rack with a handful of them can afford.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime import PSWD_VERSION
from edge_runtime.config.codec import decode
from edge_runtime.config.schema import DeviceConfig
from edge_runtime.core.clock import Clock
from edge_runtime.core.points import Sample
from edge_runtime.core.ports import InputTable
from edge_runtime.federation.config import MqttConfig
from edge_runtime.federation.mqtt import Message, MqttClient, tls_context
from edge_runtime.federation.ratelog import RateLimitedLog
from edge_runtime.federation.sensor_state import SensorNodeState
from edge_runtime.federation.topics import NodeTopics, check_level
from edge_runtime.io.blocks import OutputSchedule
from edge_runtime.io.failsafe import BlockingWriter
from edge_runtime.io.output_loop import OutputWriter
from edge_runtime.security.signing import sign

log = logging.getLogger(__name__)

COMMAND_KIND = "output"  # cmd/output; also the kind inside the MAC
SIGNING_ROLE = "infrastructure_manager"  # the rack node acts for the facility (LOCAL_ROLE)
_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)


class SensorKeyError(ValueError):
    """A sensor node's command key that cannot be used; the message names the file."""


def sensor_id(device: DeviceConfig) -> str:
    """The sensor node id of an `mqtt:<id>` endpoint."""
    return check_level("sensor node", device.url.removeprefix("mqtt:"))


def load_sensor_key(directory: Path, sensor: str) -> bytes:
    """`<directory>/<sensor>.key`: 64 lower-case hex digits, mode 0600 (as signing.load_keys)."""
    path = directory / f"{sensor}.key"
    try:
        if path.stat().st_mode & 0o077:
            raise SensorKeyError(f"{path}: readable by group or others; chmod 600 it")
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:
        raise SensorKeyError(f"{path}: {exc.strerror or exc}") from None
    if not _HEX64.fullmatch(text):
        raise SensorKeyError(f"{path}: expected 64 lower-case hex digits (a 32-byte key)")
    return bytes.fromhex(text)


def command(key: bytes, sensor: str, point: str, value: float, wall: float) -> bytes:
    """The signed cmd/output payload setting `point` (a ref) to `value`."""
    number: float | int = int(value) if float(value).is_integer() else float(value)
    doc = sign(key, sensor, COMMAND_KIND,
               {"PSWD_version": PSWD_VERSION, "point": point, "value": number},
               role=SIGNING_ROLE, now=wall)
    return json.dumps(doc, separators=(",", ":")).encode()


class SensorNodeDevice(OutputWriter):
    """FieldDevice for one sensor node over the node's broker (see the module docstring)."""

    def __init__(self, config: DeviceConfig, mqtt: MqttConfig, *, site: str, client_id: str,
                 table: InputTable, clock: Clock, key: bytes | None) -> None:
        self._config, self.table, self.clock, self.key = config, table, clock, key
        self.sensor = sensor_id(config)
        self.topics = NodeTopics(site, self.sensor)
        self.state = SensorNodeState(config, self.sensor, config.timeout_s)
        self.outputs = OutputSchedule(config.name, config.io_map.outputs, config.refresh_s)
        if config.io_map.outputs and key is None:
            raise ValueError(f"device {config.name}: outputs need a key to sign commands")
        self.client = MqttClient(mqtt, client_id=client_id, on_message=self._on_message,
                                 on_state=self._on_link)
        for topic in (self.topics.state, self.topics.telemetry, self.topics.alarm,
                      self.topics.error):
            self.client.subscribe(topic, qos=1)
        self._log = RateLimitedLog(log, interval_s=10.0, clock=clock.monotonic)
        self._wake = asyncio.Event()
        self._generation = self._written_gen = 0  # +1 per reconnect or rebirth: resend all
        self.errors: Counter[str] = Counter()
        self.last_error = ""
        self.commands = 0
        self.last_alarm: Any = None
        self.safe_source: Callable[[], Mapping[str, float]] | None = None  # safety layer's
        self._safe_seen: Mapping[str, float] | None = None
        self.listeners: list[Callable[[Mapping[str, Sample]], None]] = []  # after each publish

    @property
    def config(self) -> DeviceConfig:
        """The device's configuration."""
        return self._config

    async def run(self) -> None:
        """Listen, check staleness every timeout_ms / 4 and send commands until cancelled."""
        self.state.fresh_at = self.clock.monotonic()
        self.client.start()
        writer = asyncio.create_task(self._write_loop(), name=f"{self._config.name}-writer")
        try:
            while True:
                await asyncio.sleep(max(0.01, self._config.timeout_s / 4))
                self._publish(self.state.check_stale(self.clock.monotonic(), self.clock.wall(),
                                                     connected=self.client.connected))
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await self.client.stop(timeout=1.0)

    # -- inputs -----------------------------------------------------------------------------
    def _publish(self, samples: Mapping[str, Sample]) -> None:
        if not samples:
            return
        name = self._config.name
        for point, sample in samples.items():
            self.table[f"{name}.{point}"] = sample
        for listener in self.listeners:
            listener(samples)

    def _on_link(self, up: bool) -> None:
        if up:
            self._generation += 1
            self._wake.set()
        else:
            self._publish(self.state.link_down(self.clock.wall()))

    def _on_message(self, msg: Message) -> None:
        topics, now, wall = self.topics, self.clock.monotonic(), self.clock.wall()
        try:
            if msg.topic == topics.telemetry:
                self._publish(self.state.telemetry(msg.payload, now, wall))
            elif msg.topic == topics.state:
                born = self.state.online
                self._publish(self.state.state(msg.payload, now, wall))
                if self.state.online and not born:
                    self._generation += 1  # a rebooted board knows no command: resend all
                    self._wake.set()
            elif msg.topic == topics.alarm:
                self.last_alarm = _json_or_text(msg.payload)
                self.state.counts["alarms"] += 1
                log.info("%s: alarm from %s: %s", self._config.name, self.sensor,
                         self.last_alarm)
            elif msg.topic == topics.error:
                self._error("sensor_error", f"{self.sensor} refused a message: "
                            f"{_json_or_text(msg.payload)}")
        except ValueError as exc:  # TelemetryError too: counted, logged, the scan unaffected
            kind = "bad_telemetry" if msg.topic == topics.telemetry else "bad_state"
            self._error(kind, f"{msg.topic}: {exc}")

    def _error(self, kind: str, message: str, n: int = 1) -> None:
        super()._error(kind, message, n)
        self._log.warning(kind, "%s: %s", self._config.name, message)

    # -- outputs (stage and the writer loop: io/output_loop.py) -----------------------------
    async def write_due(self) -> None:
        """Send a signed command for every output that changed, is due a refresh or must go
        to its safe value; each waits for the broker's PUBACK (timeout_ms)."""
        cfg, outputs, now = self._config, self.outputs, self.clock.monotonic()
        self._use_safe_image()
        if self._generation != self._written_gen and self.client.connected:
            outputs.written.clear()
            self._written_gen = self._generation
        items = outputs.due(now)
        if not items or not self.client.connected or self.key is None:
            outputs.finished(now, not items, cfg.poll_s)
            return
        ok = True
        for item in items:
            spec = outputs.specs[item.name]
            value = decode(item.words, spec.encoding)
            payload = command(self.key, self.sensor, spec.ref, value, self.clock.wall())
            try:
                await self.client.publish_acked(self.topics.base + "/cmd/output", payload,
                                                qos=1, timeout=cfg.timeout_s)
            except (ConnectionError, TimeoutError) as exc:
                ok = False
                self._error("command", f"{spec.ref} = {value:g} not sent: {exc}")
                continue
            self.commands += 1
            outputs.acknowledged([item.name])
        outputs.finished(now, ok, cfg.poll_s)

    def get_status(self) -> dict[str, Any]:
        """Connection, liveness, message and command figures for every status reader."""
        st = self.state
        return {
            "connected": self.client.connected, "endpoint": self._config.endpoint,
            "sensor_node": self.sensor, "online": st.online, "session": st.session,
            "last_seq": st.last_seq, "inputs_bad_because": st.why, "counts": dict(st.counts),
            "commands": self.commands, "refused_writes": self.outputs.refused,
            "outputs_at_failsafe": sorted(self.outputs.held), "errors": dict(self.errors),
            "last_error": self.last_error, "last_alarm": self.last_alarm,
            "connection": self.client.get_status(),
        }


def _json_or_text(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return payload[:200].decode("utf-8", errors="replace")


def blocking_writer(mqtt: MqttConfig, *, site: str, client_id: str,
                    keys: Mapping[str, bytes]) -> BlockingWriter:
    """The safe-image writer for sensor nodes (io/failsafe.BlockingWriter): one fresh,
    blocking MQTT connection, one signed command per output, each waited for (PUBACK). It
    runs with the loop frozen (watchdog thread): commands are dated by the system clock."""
    def write(devices: Sequence[DeviceConfig], timeout_s: float,
              values: Mapping[str, float]) -> list[str]:
        errors: list[str] = []
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=paho.MQTTv5 if mqtt.mqtt5 else paho.MQTTv311)
        up = threading.Event()
        client.on_connect = lambda *_args: up.set()
        try:
            ctx = tls_context(mqtt)
            if ctx is not None:
                client.tls_set_context(ctx)
            client.connect_timeout = timeout_s
            client.connect(mqtt.host, mqtt.port, mqtt.keepalive_s)
            client.loop_start()
            if not up.wait(timeout_s):
                return [f"sensor nodes: no CONNACK from {mqtt.host}:{mqtt.port} in {timeout_s} s"]
            sent = []
            for dev in devices:
                key, sensor = keys.get(dev.name), sensor_id(dev)
                if key is None:
                    errors.append(f"{dev.name}: no command key")
                    continue
                for p in dev.io_map.outputs:
                    value = values.get(f"{dev.name}.{p.name}", p.failsafe)
                    if value is None:
                        continue
                    topic = f"{NodeTopics(site, sensor).base}/cmd/{COMMAND_KIND}"
                    info = client.publish(topic, command(key, sensor, p.ref, value, time.time()), 1)
                    sent.append((f"{dev.name}.{p.name}", info))
            for name, info in sent:
                info.wait_for_publish(timeout_s)
                if not info.is_published():
                    errors.append(f"{name}: safe value not acknowledged within {timeout_s} s")
        except Exception as exc:  # never raise into the watchdog thread
            errors.append(f"sensor nodes via {mqtt.host}:{mqtt.port}: {exc!r}")
        finally:
            with contextlib.suppress(Exception):
                client.disconnect()
                client.loop_stop()
        return errors
    return write


def build_sensor_nodes(mqtt: MqttConfig | None, devices: Sequence[DeviceConfig], *, site: str,
                       node: str, live: InputTable,
                       clock: Clock) -> tuple[dict[str, SensorNodeDevice], BlockingWriter]:
    """One driver per sensor node and their safe-image writer; ValueError naming the device
    and the config key when the node has no [mqtt] or no key for a sensor node's outputs."""
    if mqtt is None:
        names = ", ".join(d.name for d in devices)
        raise ValueError(f"devices {names}: a sensor node (protocol mqtt) is reached through "
                         "the node's broker; add an [mqtt] section")
    base = mqtt.client_id or node
    keys: dict[str, bytes] = {}
    drivers: dict[str, SensorNodeDevice] = {}
    for dev in devices:
        key = None
        if dev.io_map.outputs:
            if mqtt.sensor_keys is None:
                raise ValueError(f"device {dev.name}: io_map {dev.io_map.model!r} has outputs; "
                                 f"[mqtt] sensor_keys must name the directory holding "
                                 f"{sensor_id(dev)}.key to sign commands to it")
            key = keys[dev.name] = load_sensor_key(mqtt.sensor_keys, sensor_id(dev))
        drivers[dev.name] = SensorNodeDevice(dev, mqtt, site=site, client_id=f"{base}.{dev.name}",
                                             table=live, clock=clock, key=key)
    return drivers, blocking_writer(mqtt, site=site, client_id=f"{base}.sensors-failsafe",
                                    keys=keys)
