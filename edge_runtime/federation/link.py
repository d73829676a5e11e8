"""NodeLink: a running Node on MQTT. State, telemetry, alarms out; commands in; errors answered.

Wiring: the node config loader reads `[mqtt]` (federation/config.py) into NodeConfig.mqtt,
and the assembler attaches `NodeLink(node, cfg.mqtt)` to the node as its service "mqtt":
node.run() runs it beside the scan and cancels it (death published, unsent telemetry stored)
after the node stopped and left its outputs safe; `link.get_status()` is
`node.get_status()["mqtt"]`. One state_dir per node: the outbox file is locked by its owner.

What it does, on the loop that runs the scan (outbox calls on a thread of their own), none
of it awaiting the broker:
- A TelemetryRecorder (recorder.py), one of `node.engine.observers` (run after the outputs
  are flushed, so after the safety layer; it only reads), keeps every new input sample (by
  source timestamp) and every changed output of every scan. Every `telemetry_period_ms`
  the link turns them into CBOR batches (edge_runtime.messages.telemetry), numbered under
  the current session.
- Every batch and every alarm (node.events) goes into the outbox first (store-and-forward,
  SQLite WAL, survives kill -9) and leaves it on the broker's acknowledgement: PUBACK with
  telemetry_qos = 1 (the default: no batch is lost when the broker dies), socket write with
  0. After a reconnect the node publishes its birth, then replays what is stored in order;
  every batch takes its (session, seq) as it leaves the outbox (recorder.resequence, no
  re-encoding of samples), so replayed ones carry the new session with historical = true
  (alarms get the MQTT 5 user property historical=true).
- Births: JSON state (retained) with the full point list, then the CBOR birth (retained, on
  the telemetry topic) declaring the aliases. Death: the MQTT will (federation/state.py).
- Commands on `cmd/{kind}` (parsed in inbound.py): JSON, at most max_message_bytes.
  thermal_control, battery_control and grid_signal carry {"PSWD_version": "1.0",
  "timestamp": RFC 3339, "action": "set_output" | "release_output", "point": "device.point",
  "value": number}; each is screened at once against the rights table and the holds
  (ManualOutputs.screen: a refusal is audited and answered here, naming the rule), then goes
  to node.commands (checked again, applied and audited at the next scan). With [mqtt]
  command_keys every kind but rebirth is signed, workload and prepare included, and acts
  with the signer's role; unsigned, with `channel_role`. rebirth: any JSON object (or
  empty). workload: an Annex A.1 announcement, recorded as an event and posted as
  AnnounceWorkload for the role's predictive blocks. The site publishes admitted ones once
  on `pswd/v1/{site}/workload/prepare`, which every node also subscribes to; a node whose
  role is not in the message's `site_decision.roles` ignores it. Every invalid message is
  answered on `.../error` with the reason and the field, and counted by category (at most
  ERROR_ANSWERS_PER_S answers a second; the rest are only counted).

Link-loss watchdog (`[mqtt] link_loss_s`, `on_link_loss`): see link_loss.py; NodeLink
feeds it the link's state and adds it to the scan's observers.

Telemetry takes the outbox on every batch, link up or down (one SQLite put of ~6 kB per
500 samples), rather than only while the link is down: a batch written to the socket just
before the broker dies is then not lost, and order is kept without a second path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime import PSWD_VERSION, __version__
from edge_runtime.core.authority import DEFAULT_RIGHTS, Refused
from edge_runtime.core.commands import AnnounceWorkload, ReleaseOutput, SetOutput
from edge_runtime.core.events import Severity
from edge_runtime.core.scan import ScanEngine
from edge_runtime.federation import state
from edge_runtime.federation.config import MqttConfig
from edge_runtime.federation.inbound import (
    Invalid,
    Rebirth,
    Verifier,
    WorkloadNotice,
    parse_command,
)
from edge_runtime.federation.link_loss import GuardedNode, LinkLossGuard
from edge_runtime.federation.mqtt import Message, MqttClient, node_packet_limit
from edge_runtime.federation.outbox import Entry, Outbox, OutboxError, open_outbox
from edge_runtime.federation.ratelog import RateLimitedLog
from edge_runtime.federation.recorder import (
    EncodedBatch,
    TelemetryRecorder,
    encode_batches,
    fingerprint,
    resequence,
)
from edge_runtime.federation.topics import NodeTopics, SiteTopics
from edge_runtime.messages.telemetry import (
    TelemetryError,
    encode_birth,
)
from edge_runtime.node import NodeSettings
from edge_runtime.security.ids import IntrusionDetector, offence_of
from edge_runtime.security.signing import CommandVerifier, load_keys

NONCES = "nonces.log"  # the replay journal, in [mqtt] state_dir

log = logging.getLogger(__name__)
T = TypeVar("T")

SLICE_S = 0.002  # longest stretch of link work between two yields to the loop
INFLIGHT = 64  # unacknowledged publishes from the outbox
ERROR_ANSWERS_PER_S = 50  # beyond this, invalid messages are only counted (no echo storms)


class LinkedNode(GuardedNode, Protocol):
    """What the link needs of edge_runtime.node.Node."""

    config: NodeSettings
    engine: ScanEngine


class NodeLink:
    """Attach a Node to MQTT; `await run()` beside `node.run()` (see the module docstring)."""

    def __init__(self, node: LinkedNode, cfg: MqttConfig, *,
                 verify: Verifier | None = None,
                 channel_role: str = "infrastructure_manager",
                 ids: IntrusionDetector | None = None) -> None:
        """`verify(kind, doc)` returns None or why a command is refused; by default the
        HMAC-SHA256 envelope check of security/signing.py with the keys in [mqtt] command_keys.
        `channel_role` is the role the command channel is granted (spec 10.2.2): the broker's
        ACL lets only site and operator certificates publish on cmd topics."""
        self.node = node
        self.cfg = cfg
        nc = node.config
        self.topics = NodeTopics(nc.site, nc.name)
        self.prepare_topic = SiteTopics(nc.site).prepare
        self.who = state.Identity(nc.site, nc.name, nc.role, __version__)
        self.points = state.point_list(node.image.inputs_info, node.image.outputs_info)
        self.fingerprint = fingerprint(self.points)
        self.recorder = TelemetryRecorder(self.points, node.image.inputs_info, node.clock.wall)
        self.sessions = state.SessionCounter(cfg.state_dir)
        self.session = self.sessions.current
        self._outbox: Outbox | None = None
        # Every outbox call runs on this one thread (the Outbox wants a single thread): disk
        # writes, and the stalls a busy disk can put into them, stay off the scan's loop.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"outbox-{nc.name}")
        if verify is None and cfg.command_keys is not None:
            # nonces journaled in the state dir: a command captured before a restart is
            # refused after it; the node's rights table decides who may send which kind
            verify = CommandVerifier(load_keys(cfg.command_keys), node=nc.name, site=nc.site,
                                     wall=node.clock.wall, journal=cfg.state_dir / NONCES,
                                     rights=getattr(node.manual, "rights", DEFAULT_RIGHTS))
        elif verify is None:
            log.warning("%s: control commands over MQTT are accepted unsigned; set [mqtt] "
                        "command_keys to require HMAC-SHA256 envelopes (spec 5.3 b)", nc.name)
        self._verify = verify
        self.channel_role = channel_role
        # The node's intrusion detector (security/ids.py), shared with its other transports.
        # The broker hides the publisher, so a source here is the command topic: a flood or a
        # run of forgeries on cmd/battery_control blocks that topic for a while, not the node.
        self.ids = ids
        self.client = MqttClient(cfg, client_id=cfg.client_id or nc.name,
                                 on_message=self._on_message, on_state=self._on_state,
                                 on_published=self._on_published,
                                 max_packet_bytes=node_packet_limit(cfg.max_message_bytes))
        self._online = False
        self.link_loss = LinkLossGuard(node, cfg.link_loss_s, cfg.on_link_loss,
                                       require_coordinator=cfg.require_coordinator)
        self._coordinator_prefix = SiteTopics(nc.site).coordinator_prefix
        self._send_seq = 0  # next seq to go out in this session
        self._inflight: dict[int, int] = {}  # mid -> outbox seq
        self._inflight_samples: dict[int, int] = {}  # mid -> samples in that batch
        self._epoch = 0
        self.samples_stored = 0  # into the outbox
        self.samples_sent = 0  # acknowledged by the broker (written, with QoS 0)
        self._cursor = 0
        self._acks: list[int] = []
        self._wake = asyncio.Event()
        self._events_seen = node.events.total
        self._error_budget = (0.0, 0)
        self._invalid_log = RateLimitedLog(log, clock=node.clock.monotonic)  # per category
        self.invalid: Counter[str] = Counter()
        self.sent = Counter[str]()
        self.replayed = 0
        self.stale_dropped = 0

    @property
    def outbox(self) -> Outbox:
        """The outbox (opened by run())."""
        if self._outbox is None:
            raise RuntimeError("NodeLink.run() has not opened the outbox yet")
        return self._outbox

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run an outbox call on the outbox thread (calls run in the order they are made)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, functools.partial(fn, *args, **kwargs))

    def _db_later(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue an outbox call without waiting; later calls still run after it."""
        def done(f: Future[Any]) -> None:
            if f.exception() is not None:
                log.error("%s: outbox call %s failed: %s", self.who.node,
                          getattr(fn, "__name__", fn), f.exception())
        self._io.submit(fn, *args).add_done_callback(done)

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Keep the node on MQTT until cancelled; then store what is unsent, publish the death."""
        self._outbox = await self._db(open_outbox, self.cfg.state_dir / "outbox.sqlite",
                                      events=self.node.events, clock=self.node.clock,
                                      max_rows=self.cfg.outbox_capacity)
        self.node.engine.observers.append(self.recorder)
        # down from here until the first connect
        self.link_loss = LinkLossGuard(self.node, self.cfg.link_loss_s, self.cfg.on_link_loss,
                                       require_coordinator=self.cfg.require_coordinator)
        self.node.engine.observers.append(self.link_loss)
        self.client.set_will(self.topics.state, self._death(self.sessions.upcoming,
                                                            "connection lost"))
        self.client.subscribe(f"{self.topics.base}/cmd/#", qos=1, retain_as_published=True)
        self.client.subscribe(self.prepare_topic, qos=1, retain_as_published=True)
        # coordinator liveness: none online counts as link loss (link_loss.py)
        self.client.subscribe(f"{self._coordinator_prefix}+/state", qos=1)
        self.client.start()
        try:
            await asyncio.gather(self._ticker(), self._sender())
        finally:
            for observer in (self.recorder, self.link_loss):
                with contextlib.suppress(ValueError):
                    self.node.engine.observers.remove(observer)
            await self._store_telemetry()
            self._flush_acks()
            if self._online:
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await self.client.publish_acked(
                        self.topics.state, self._death(self.session, "shutdown"), 1, True,
                        timeout=1.0)
            await self.client.stop()
            await self._db(self.outbox.close)
            self._io.shutdown(wait=False)

    def _death(self, session: int, reason: str) -> bytes:
        return state.death_json(self.who, session=session, wall_s=self.node.clock.wall(),
                                reason=reason)

    def _birth(self) -> None:
        """New session: JSON state, then the CBOR alias table, both retained; seq back to 0."""
        self.session = self.sessions.next()
        self._send_seq = 0
        wall = self.node.clock.wall()
        self.client.publish(self.topics.state, state.birth_json(
            self.who, session=self.session, wall_s=wall, points=self.points,
            period_ms=self.cfg.telemetry_period_ms), 1, True)
        self.client.publish(self.topics.telemetry, encode_birth(
            self.points, session=self.session, time_ms=round(wall * 1000)), 1, True)
        self.client.set_will(self.topics.state, self._death(self.sessions.upcoming,
                                                            "connection lost"))
        log.info("%s: birth of session %d (%d points)", self.who.node, self.session,
                 len(self.points))

    def _on_state(self, up: bool) -> None:
        self._online = up
        self.link_loss.link(up)
        self._epoch += 1
        self._inflight.clear()
        self._inflight_samples.clear()
        self._cursor = 0
        if up:
            self._birth()
            # queued behind every put made so far, before the sender's next pending()
            self._db_later(self.outbox.mark_reconnected)
        self._wake.set()

    # -- outgoing -------------------------------------------------------------------------------
    # Encoding runs on the scan's loop one batch (at most MAX_BATCH_SAMPLES, ~0.3 ms) at a time
    # and the sender yields every SLICE_S, so a large batch or a long replay delays a scan by
    # one slice at most; outbox calls wait on the outbox thread.
    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.cfg.telemetry_period_ms / 1000
        deadline = loop.time()
        while True:
            deadline += period
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            if loop.time() - deadline > period:
                deadline = loop.time()  # the loop was stalled: do not burst to catch up
            for batch in self._batches():
                await self._store(batch)
                self._wake.set()
            await self._store_alarms()
            self._wake.set()

    def _batches(self) -> Iterator[EncodedBatch]:
        samples = self.recorder.take()
        if not samples or self._outbox is None:
            return iter(())
        # (session, seq) are set when the batch leaves the outbox: see _prepare
        return encode_batches(samples, session=self.session, first_seq=0)

    async def _store_telemetry(self) -> None:
        """Store everything recorded so far (at shutdown: replayed by the next start)."""
        for batch in self._batches():
            await self._store(batch)

    async def _store(self, batch: EncodedBatch) -> None:
        try:
            await self._db(self.outbox.put, self.topics.telemetry, batch.payload,
                           kind="telemetry", qos=self.cfg.telemetry_qos,
                           properties={"aliases": self.fingerprint,
                                       "samples": batch.samples})
        except (OutboxError, TelemetryError, ValueError) as exc:
            log.error("%s: telemetry batch not stored: %s", self.who.node, exc)
            return
        self.samples_stored += batch.samples

    async def _store_alarms(self) -> None:
        events = self.node.events
        new = events.since(self._events_seen)
        self._events_seen = events.total
        for ev in new:
            if ev.source == "outbox":
                continue  # about the outbox itself: storing it there could recurse when full
            doc = {"PSWD_version": PSWD_VERSION, "timestamp": state.timestamp(ev.ts),
                   "site": self.who.site, "node": self.who.node, "source": ev.source,
                   "severity": ev.severity.value, "message": ev.message, "code": ev.code}
            try:
                await self._db(self.outbox.put, self.topics.alarm, json.dumps(doc).encode(),
                               kind="alarm")
            except (OutboxError, ValueError) as exc:
                log.error("%s: alarm not stored: %s", self.who.node, exc)

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._flush_acks()
            await self._send_some()

    async def _send_some(self) -> None:
        epoch = self._epoch  # changes when the connection does: stop, the cursor was reset
        started = time.perf_counter()
        while self._online and len(self._inflight) < INFLIGHT:
            entries = await self._db(self.outbox.pending, INFLIGHT - len(self._inflight),
                                     after=self._cursor)
            if not entries or epoch != self._epoch:
                return
            for e in entries:
                if time.perf_counter() - started > SLICE_S:
                    await asyncio.sleep(0)
                    started = time.perf_counter()
                if epoch != self._epoch or not self._online:
                    return
                # No await from here to the publish: session and seq cannot move in between.
                payload = self._prepare(e)
                if payload is None:
                    self._acks.append(e.seq)
                    self._cursor = e.seq
                    continue
                historical = e.historical and self.cfg.mqtt5
                mid = self.client.publish(
                    e.topic, payload, e.qos, e.retain,
                    properties=_historical_props() if historical else None)
                if mid is None:
                    return  # went offline: _on_state resets the cursor
                if e.kind == "telemetry":
                    self._send_seq += 1
                    self.sent["telemetry"] += 1
                    self._inflight_samples[mid] = int((e.properties or {}).get("samples", 0))
                else:
                    self.sent[e.kind] += 1
                self.replayed += e.historical
                self._inflight[mid] = e.seq
                self._cursor = e.seq

    def _prepare(self, e: Entry) -> bytes | None:
        """The bytes to publish: a telemetry batch gets the session's next seq here, in send
        order, so seq runs 0, 1, 2, ... after every birth whatever waited in the outbox."""
        if e.kind != "telemetry":
            return e.payload
        if (e.properties or {}).get("aliases") != self.fingerprint:
            self.stale_dropped += 1  # stored under another point list: aliases would lie
            log.warning("%s: stored batch %d has another alias table; dropped", self.who.node,
                        e.seq)
            return None
        try:
            # Live batches only lag a rebirth; stored ones waited for a link (historical).
            return resequence(e.payload, session=self.session, seq=self._send_seq,
                              historical=e.historical)
        except ValueError as exc:
            self.stale_dropped += 1
            log.error("%s: stored batch %d unreadable, dropped: %s", self.who.node, e.seq, exc)
            return None

    def _on_published(self, mid: int) -> None:
        seq = self._inflight.pop(mid, None)
        self.samples_sent += self._inflight_samples.pop(mid, 0)
        if seq is not None:
            if not self._acks:
                asyncio.get_running_loop().call_soon(self._flush_acks)
            self._acks.append(seq)
            self._wake.set()

    def _flush_acks(self) -> None:
        if self._acks and self._outbox is not None:
            acks, self._acks = self._acks, []
            self._db_later(self.outbox.ack_many, acks)

    # -- incoming -------------------------------------------------------------------------------
    def _on_message(self, msg: Message) -> None:
        if msg.topic.startswith(self._coordinator_prefix):  # only .../{instance}/state
            instance = msg.topic[len(self._coordinator_prefix):].removesuffix("/state")
            self.link_loss.coordinator(instance, msg.payload)
            return
        try:
            self._handle(msg)
        except Invalid as bad:
            self._answer_error(msg, bad)
        except Exception as exc:  # a bug here must not take the link down
            log.exception("%s: handling %s failed", self.who.node, msg.topic)
            self._answer_error(msg, Invalid("internal", f"internal error: {exc!r}"))

    def _handle(self, msg: Message) -> None:
        kind = ("prepare" if msg.topic == self.prepare_topic
                else msg.topic.removeprefix(f"{self.topics.base}/cmd/"))
        if kind == "prepare" and msg.topic != self.prepare_topic:
            kind = "cmd/prepare"  # prepare comes on the site's topic only: unknown here
        if self.ids is not None:
            source = f"mqtt:{kind}"
            if (left := self.ids.blocked(source)) > 0:
                raise Invalid("blocked", f"{source} is blocked for {left:.0f} s more after "
                              "repeated offences (intrusion detection)", "topic")
            if kind != "rebirth" and not self.ids.command(source):
                raise Invalid("blocked", f"{source}: commands arrive faster than "
                              f"{self.ids.command_rate:g}/s; blocked", "topic")
        request = parse_command(kind, msg.payload, retain=msg.retain,
                                max_bytes=self.cfg.max_message_bytes, image=self.node.image,
                                verify=self._verify, role=self.channel_role)
        if isinstance(request, SetOutput | ReleaseOutput):
            _gate(self.node.manual, request)  # rights and precedence: audited, answered now
        if isinstance(request, Rebirth):
            if self._online:
                self._birth()  # what is stored but unsent is re-encoded under the new session
                self._wake.set()
        elif isinstance(request, WorkloadNotice):
            if request.roles is not None and self.who.role not in request.roles:
                return  # a site-wide notice for other roles (say, the racks only)
            decision = request.site_decision
            decided = f", site decision {decision}" if decision else ""
            self.node.events.raise_event(
                self.node.clock.wall(), "mqtt.workload", Severity.INFO,
                f"workload {request.workload_id} announced{decided}", "workload_announced")
            # to the role's predictive blocks, checked and audited at the next scan
            # (the role that signed it; unsigned, the channel's; the source names the topic:
            # the command path checks the role against both)
            self.node.commands.submit(AnnounceWorkload(request.announcement,
                                                       role=request.role or self.channel_role,
                                                       source=f"mqtt.{kind}"))
        else:
            self.node.commands.submit(request)  # applied and audited at the next scan

    def _answer_error(self, msg: Message, bad: Invalid) -> None:
        self.invalid[bad.category] += 1
        if self.ids is not None and (offence := offence_of(bad.category, bad.field,
                                                           bad.reason)) is not None:
            kind = msg.topic.removeprefix(f"{self.topics.base}/cmd/")
            self.ids.record(f"mqtt:{'prepare' if msg.topic == self.prepare_topic else kind}",
                            offence, bad.reason[:80])
        self._invalid_log.warning(bad.category, "%s: invalid message on %s: %s", self.who.node,
                                  msg.topic, bad.reason)
        now = self.node.clock.monotonic()
        window, used = self._error_budget
        if now - window >= 1.0:
            window, used = now, 0
        self._error_budget = (window, used + 1)
        if used >= ERROR_ANSWERS_PER_S:
            self.invalid["unanswered"] += 1
            return
        doc = {"PSWD_version": PSWD_VERSION, "timestamp": state.timestamp(self.node.clock.wall()),
               "node": self.who.node, "topic": msg.topic, "error": bad.reason,
               "field": bad.field, "category": bad.category,
               "invalid_total": sum(v for k, v in self.invalid.items() if k != "unanswered")}
        self.client.publish(self.topics.error, json.dumps(doc).encode(), 1,
                            correlation_data=msg.correlation_data)

    def get_status(self) -> dict[str, Any]:
        """Link, session, counters, outbox and client status."""
        return {"online": self._online, "session": self.session, "next_seq": self._send_seq,
                "points": len(self.points), "sent": dict(self.sent), "replayed": self.replayed,
                "samples_stored": self.samples_stored, "samples_sent": self.samples_sent,
                "invalid": dict(self.invalid), "stale_dropped": self.stale_dropped,
                "link_lost": self.link_loss.lost,
                "released_on_loss": list(self.link_loss.released),
                "coordinators_online": list(self.link_loss.coordinators.online),
                "recorder_dropped": self.recorder.dropped, "inflight": len(self._inflight),
                "outbox": self._outbox.get_status() if self._outbox is not None else None,
                "mqtt": self.client.get_status()}


def _gate(manual: Any, request: SetOutput | ReleaseOutput) -> None:
    """Invalid("refused") naming the rule when the command path would refuse `request`."""
    screen = getattr(manual, "screen", None)  # ManualOutputs.screen (core/commands.py)
    if screen is None:
        return
    try:
        screen(request)
    except Refused as exc:
        field = "point" if str(exc).startswith("precedence") else "role"
        raise Invalid("refused", str(exc), field) from None


def _historical_props() -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = [("historical", "true")]
    return props
