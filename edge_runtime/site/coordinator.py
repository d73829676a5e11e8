"""Site coordinator (role `site`): answers Annex A workload announcements over MQTT.

It subscribes to `pswd/v1/{site}/workload/announce` on the MQTT 5 shared subscription
`$share/{share_group}/...`, so several coordinator processes split the announcements between
them (the broker hands each message to one member of the group); it answers every A.1 with an
A.2 on `pswd/v1/{site}/workload/response/{workload_id}` and, when the announcement carries an
MQTT 5 response topic, on that topic with the announcement's correlation data. Invalid
announcements are answered on `pswd/v1/{site}/{node}/error` with the reasons (and on the
response topic when there is one). Accepted announcements are published once on
`pswd/v1/{site}/workload/prepare`, which the rack and CDU nodes subscribe to, so they prepare
(pre-cool, hold battery charge). Every instance also reads,
without sharing, node state and telemetry, grid status and the other instances' signed
decisions on `pswd/v1/{site}/coordinator/+/decision` (site/peer.py), so each keeps the whole
site aggregate and books what the others admitted.

Liveness (federation/coordinator_state.py): each instance keeps a retained online state on
`pswd/v1/{site}/coordinator/{instance}/state` with an offline will stamped like it, and
publishes offline itself on a clean stop; nodes treat "no instance online" as a lost site
link (federation/link_loss.py).
The decisions live in handler.py and admission.py (sans-IO); this module is the MQTT adapter.

Running the site role
---------------------
    pswd-edge run --config examples/site.toml

The assembler (edge_runtime/assembly/) attaches one coordinator to every site node.

`examples/site.toml` holds `[node]` (role = "site"), `[mqtt]` (broker, see
federation/config.py) and `[site]` (admission policy, see site/config.py). For a second
instance on another machine, copy the file and change `[node] name` and `[mqtt] client_id`:
both join the same shared-subscription group and split the load.

Brokers in production
---------------------
One site, one machine: Mosquitto 2.x, which has MQTT 5 shared subscriptions. Its config:

    listener 8883
    cafile /etc/pswd/pki/ca.crt          # TLS 1.3 with client certificates (spec 5.3 a)
    certfile /etc/pswd/pki/broker.crt
    keyfile /etc/pswd/pki/broker.key
    tls_version tlsv1.3
    require_certificate true
    use_identity_as_username true
    set_tcp_nodelay true                 # else a QoS 1 hop can wait 40 ms for a delayed ACK

Beyond one machine: a clustered broker that supports MQTT 5 shared subscriptions across its
nodes (EMQX, HiveMQ, VerneMQ). Coordinators connect to any cluster member and the cluster
hands each `$share/{group}/...` message to one member of the group wherever it is connected,
so scaling out is starting another coordinator, not writing a distribution layer. If a
coordinator dies holding an unanswered announcement, MQTT 5 says the broker SHOULD hand it to
another member once the dead one's session ends; not every broker does (Mosquitto 2.0 drops
it with the clean session), so the end-to-end retry is the workload's: on AnnounceTimeout,
announce again. A repeat with the same workload_id and timestamp is answered from a cache by
the instance that answered it, without a second booking; any other instance replaces the
booking it learnt from the peer decision. The demo's embedded
amqtt broker speaks MQTT 3.1.1 only, without shared subscriptions or response topics: run a
single coordinator there; answers then go to workload/response/{id} only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import threading
from typing import Any

from edge_runtime.core.clock import Clock, WallClock
from edge_runtime.federation.config import MqttConfig
from edge_runtime.federation.coordinator_state import state_json
from edge_runtime.federation.mqtt import Message, MqttClient
from edge_runtime.federation.state import timestamp
from edge_runtime.security.signing import PREPARE, PREPARE_ROLE, load_keys, sign, site_target
from edge_runtime.site.admission import SiteSnapshot
from edge_runtime.site.config import SiteConfig
from edge_runtime.site.handler import Outgoing, SiteHandler

log = logging.getLogger(__name__)


class SiteCoordinator:
    """One coordinator instance: an MqttClient feeding a SiteHandler.

    Messages are handled on the client's network thread, where paho delivers them, not on
    the event loop: a decision is a fraction of a millisecond of pure computation, and the
    hop to the loop and back (wake-ups, GIL hand-overs for every publish) cost more than the
    decision and halved the sustainable rate. The handler is guarded by a lock, so
    get_status() from the loop sees a consistent state.
    """

    def __init__(self, mqtt: MqttConfig, *, site: str, node: str, config: SiteConfig,
                 clock: Clock | None = None, client_id: str | None = None) -> None:
        self.clock: Clock = clock or WallClock()
        self.handler = SiteHandler(site, node, config)
        # Its own client id: the site node's NodeLink (births, alarms) connects as
        # [mqtt] client_id, and a broker drops the older of two same-id connections.
        # track_acks off: it never waits for a PUBACK, and handing each to the event loop
        # cost ~40 % of its CPU (bench/announce_latency.py)
        self.client = MqttClient(mqtt, client_id=client_id or f"{mqtt.client_id or node}-sc",
                                 track_acks=False, on_connect=self._on_connect)
        # liveness (federation/coordinator_state.py): the will registered for the next
        # connection, and the timestamp it carries (each connection takes a later one)
        self._state_topic = self.handler.topics.coordinator_state(node)
        self._state_ts = self._next_will(0.0)
        self._online_ts = self._state_ts
        if config.peer_key is None:
            log.warning("site coordinator %s: decisions shared with other instances are "
                        "unsigned; set [site] coordinator_keys, or make sure the broker ACL "
                        "lets only coordinators write under %s", node,
                        self.handler.topics.coordinator_prefix)
        if not mqtt.mqtt5:
            log.warning("site coordinator on MQTT 3.1.1: no shared subscription, no response "
                        "topics; run a single instance")
        self._lock = threading.Lock()
        for topic, qos in self._subscriptions(mqtt.mqtt5):
            # No Local on the peer decisions: our own are not sent back to us
            self.client.subscribe(topic, qos, no_local=topic == self.handler.peer_decisions)
            # paho matches deliveries against the plain filter, not the $share/... one
            plain = topic.split("/", 2)[2] if topic.startswith("$share/") else topic
            self.client.on_network_thread(plain, self.on_message)
        self.published = 0
        self._site = site
        # With [mqtt] command_keys holding the infrastructure manager's key, what goes out on
        # workload/prepare is signed: nodes with keys refuse an unsigned one.
        self._prepare_key = prepare_key(mqtt)

    def _subscriptions(self, mqtt5: bool) -> list[tuple[str, int]]:
        subs = self.handler.subscriptions()
        if mqtt5:
            return subs
        # 3.1.1 has no $share: subscribe to the plain topics
        return [(t.split("/", 2)[2] if t.startswith("$share/") else t, q) for t, q in subs]

    def on_message(self, msg: Message) -> None:
        """Handle one message and publish the answers (any thread)."""
        try:
            with self._lock:
                out = self.handler.handle(msg.topic, msg.payload, self.clock.wall(),
                                          response_topic=msg.response_topic,
                                          correlation_data=msg.correlation_data)
            self.publish(out)
        except Exception:  # never let an exception into paho's loop
            log.exception("site coordinator failed on %s", msg.topic)

    def publish(self, messages: list[Outgoing]) -> None:
        """Send what the handler produced (dropped with a warning while offline)."""
        for o in messages:
            if self._prepare_key is not None and o.topic == self.handler.topics.prepare:
                o = sign_prepare(o, self._prepare_key, self._site, self.clock.wall())
            mid = self.client.publish(o.topic, o.payload, o.qos, o.retain,
                                      correlation_data=o.correlation_data)
            if mid is None:
                log.warning("offline: could not publish to %s", o.topic)
            else:
                self.published += 1

    def _state(self, online: bool, ts: float, reason: str = "") -> bytes:
        return state_json(self.handler.topics.site, self.handler.me.node, online=online,
                          timestamp=timestamp(ts), reason=reason)

    def _next_will(self, previous: float) -> float:
        """Register the offline will for the next CONNECT, stamped later than `previous`."""
        ts = max(self.clock.wall(), previous + 0.001)
        self.client.set_will(self._state_topic, self._state(False, ts, "connection lost"))
        return ts

    def _on_connect(self, client: MqttClient) -> None:
        """Network thread, on every connect: retained online state stamped like this
        connection's will; then the will of the next connection."""
        self._online_ts = self._state_ts
        client.publish(self._state_topic, self._state(True, self._online_ts), 1, True)
        self._state_ts = self._next_will(self._state_ts)

    async def _stop_client(self) -> None:
        """Clean stop: say offline first (a DISCONNECT sends no will), then disconnect."""
        if self.client.connected:  # stamped like this connection's online state
            self.client.publish(self._state_topic,
                                self._state(False, self._online_ts, "shutdown"), 1, True)
        await self.client.stop()

    async def start(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; returns once every subscription is acknowledged."""
        self.client.start()
        await self.client.wait_connected(timeout_s)
        await self.client.wait_subscribed(timeout_s)
        _freeze_startup_objects()

    async def run(self, duration_s: float | None = None) -> None:
        """Run until cancelled (or for `duration_s`)."""
        self.client.start()
        _freeze_startup_objects()
        try:
            if duration_s is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(duration_s)
        finally:
            await self._stop_client()

    async def stop(self) -> None:
        """Say offline and disconnect."""
        await self._stop_client()

    def snapshot(self) -> SiteSnapshot:
        """The site aggregate now, taken under the handler's lock (any thread)."""
        with self._lock:
            return self.handler.aggregate.snapshot(self.clock.wall())

    def get_status(self) -> dict[str, Any]:
        """Handler counters, aggregate and MQTT link."""
        with self._lock:
            status = self.handler.get_status(self.clock.wall())
        return {**status, "mqtt": self.client.get_status()}


def prepare_key(mqtt: MqttConfig) -> bytes | None:
    """The key the coordinator signs workload/prepare with (the infrastructure manager's)."""
    if mqtt.command_keys is None:
        return None
    key = load_keys(mqtt.command_keys).get(PREPARE_ROLE)
    if key is None:
        log.warning("no %s.key in %s: workload/prepare goes out unsigned, and nodes with "
                    "command_keys refuse it", PREPARE_ROLE, mqtt.command_keys)
    return key


def sign_prepare(o: Outgoing, key: bytes, site: str, now: float) -> Outgoing:
    """`o` (a workload/prepare A.1) with a signed envelope for every node of `site`."""
    doc = json.loads(o.payload)
    signed = sign(key, site_target(site), PREPARE, doc, role=PREPARE_ROLE, now=now)
    return dataclasses.replace(o, payload=json.dumps(signed, separators=(",", ":")).encode())


def _freeze_startup_objects() -> None:
    """Move what exists now (schema validators, libraries, the aggregate) out of the garbage
    collector's reach: a full collection walks all of it and stalled every announcement in
    flight for 12-20 ms (bench/announce_latency.py), where the young generations take < 1 ms."""
    gc.collect()
    gc.freeze()
