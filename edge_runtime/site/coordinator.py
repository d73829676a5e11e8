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
without sharing, node state and telemetry, grid status and the other instances' responses,
so each keeps the whole site aggregate and books what the others admitted.
The decisions live in handler.py and admission.py (sans-IO); this module is the MQTT adapter.

Running the site role
---------------------
    pswd-edge run --config examples/site.toml

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
booking it learnt from the peer response. The demo's embedded
amqtt broker speaks MQTT 3.1.1 only, without shared subscriptions or response topics: run a
single coordinator there; answers then go to workload/response/{id} only.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from pathlib import Path
from typing import Any

from edge_runtime.config.reader import ErrorLog, Section, read_toml
from edge_runtime.core.clock import Clock, WallClock
from edge_runtime.federation.config import MqttConfig, read_mqtt
from edge_runtime.federation.mqtt import Message, MqttClient
from edge_runtime.federation.topics import check_level
from edge_runtime.site.admission import SiteSnapshot
from edge_runtime.site.config import SiteConfig, read_site_section
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
                                 track_acks=False)
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
            mid = self.client.publish(o.topic, o.payload, o.qos, o.retain,
                                      correlation_data=o.correlation_data)
            if mid is None:
                log.warning("offline: could not publish to %s", o.topic)
            else:
                self.published += 1

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
            await self.client.stop()

    async def stop(self) -> None:
        """Disconnect."""
        await self.client.stop()

    @classmethod
    def from_file(cls, path: Path | str, **kwargs: Any) -> SiteCoordinator:
        """A coordinator from a site node's TOML ([node] name/site/role, [mqtt], [site]);
        ConfigError listing every problem (`file: [section] key: reason`)."""
        node, site, mqtt, config = load_site_node(path)
        return cls(mqtt, site=site, node=node, config=config, **kwargs)

    def snapshot(self) -> SiteSnapshot:
        """The site aggregate now, taken under the handler's lock (any thread)."""
        with self._lock:
            return self.handler.aggregate.snapshot(self.clock.wall())

    def get_status(self) -> dict[str, Any]:
        """Handler counters, aggregate and MQTT link."""
        with self._lock:
            status = self.handler.get_status(self.clock.wall())
        return {**status, "mqtt": self.client.get_status()}


def _freeze_startup_objects() -> None:
    """Move what exists now (schema validators, libraries, the aggregate) out of the garbage
    collector's reach: a full collection walks all of it and stalled every announcement in
    flight for 12-20 ms (bench/announce_latency.py), where the young generations take < 1 ms."""
    gc.collect()
    gc.freeze()


def load_site_node(path: Path | str) -> tuple[str, str, MqttConfig, SiteConfig]:
    """(node name, site, MqttConfig, SiteConfig) of a site node's config file.

    Reads only what the coordinator needs; [node] as a whole and [devices] stay with the
    node config loader, which must accept the `mqtt` and `site` tables."""
    path = Path(path)
    errors = ErrorLog()
    data = read_toml(path, errors)
    errors.raise_if_any()
    assert data is not None
    file = str(path)
    node_sec = Section(file, "node", data.get("node"), errors)
    name = node_sec.get_str("name")
    site = node_sec.get_str("site", "site")
    role = node_sec.get_str("role")
    if isinstance(role, str) and role != "site":
        node_sec.error("role", f"must be 'site' to run the site coordinator, got {role!r}")
    for key, value in (("name", name), ("site", site)):
        if isinstance(value, str):
            try:
                check_level(key, value)
            except ValueError as exc:
                node_sec.error(key, str(exc))
    if "mqtt" not in data:
        errors.add(file, "mqtt", "(table)", "required for role site")
        mqtt = MqttConfig()
    else:
        mqtt = read_mqtt(Section(file, "mqtt", data["mqtt"], errors), path.parent)
    config = read_site_section(Section(file, "site", data.get("site", {}), errors))
    errors.raise_if_any()
    return name, site, mqtt, config


async def run_site(path: Path | str, duration_s: float | None = None) -> None:
    """`pswd-edge run` for role site: the coordinator until cancelled (or `duration_s`)."""
    coordinator = SiteCoordinator.from_file(path)
    log.info("site coordinator %s for site %s on %s:%d (group %s)",
             coordinator.handler.me.node, coordinator.handler.topics.site,
             coordinator.client.cfg.host, coordinator.client.cfg.port,
             coordinator.handler.config.share_group)
    await coordinator.run(duration_s)
