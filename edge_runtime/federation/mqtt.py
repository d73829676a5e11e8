"""An MQTT client for asyncio programs, on paho-mqtt 2.x: MQTT 5 or 3.1.1, TLS 1.3 with a
client certificate, reconnect with exponential backoff, and nothing that blocks the loop.

Network I/O (connect, TLS handshake, reads, writes, keepalive) runs on one thread owned by the
client, so a slow or dead broker never delays the scan; `publish()` only queues (paho's queue
is thread-safe) and returns at once. Callbacks reach the asyncio loop through
`call_soon_threadsafe`, except `on_connect`, which runs on the network thread right after the
CONNACK and before anything else is sent: that is where births go, so they always lead.

    client = MqttClient(cfg, client_id="cdu-1", on_message=handle)  # handle(Message): loop
    client.set_will(topic, payload, qos=1, retain=True)       # registered at each CONNECT
    client.subscribe("pswd/v1/site/cdu-1/cmd/+", qos=1)       # renewed on every connect
    client.start()                                            # returns at once
    await client.wait_connected(timeout=5)
    client.publish(topic, payload, qos=1)                     # -> mid, or None if offline
    await client.publish_acked(topic, payload, qos=1, timeout=5)  # waits for the PUBACK
    await client.stop()

Delivery: by default every connection starts clean (MQTT 5 clean start / 3.1.1 clean
session; `clean_start=False` with `session_expiry_s` keeps a subscriber's session at the
broker), and paho's own queue of unacknowledged messages is dropped at each connect, so
nothing is resent behind the application's back; whoever needs at-least-once keeps its own
copy (the link's outbox) and republishes after `on_state(True)`. `publish()` while offline
returns None.

Backpressure: at most `max_backlog` (1,000) received messages wait for the loop; beyond that
the network thread stops reading until the loop has worked half of them off, so a slow
consumer makes the broker queue (within its limits) instead of this process growing.

MQTT 5 request/response: `publish(..., response_topic=..., correlation_data=...)`, and
`Message.response_topic` / `Message.correlation_data` on receipt (None under 3.1.1).

For request rates (the site coordinator, 1,000 announcements/s):
- `on_network_thread(filter, handler)`: messages on that filter are handled on the network
  thread, where paho delivers them, instead of being handed to the loop (a wake-up and two
  GIL hand-overs per message, more than a decision costs);
- `track_acks=False`: PUBACKs are not handed to the loop (publish_acked() is then refused);
- `subscribe(..., no_local=True)` (MQTT 5): the broker does not send our own publishes back.
A peer that is not an MQTT broker (a wrong `[mqtt] port`: an HTTP server, a Modbus device,
something that accepts and says nothing) is reported within `connect_timeout_s` (5 s): its
first packet must be a CONNACK, and one must come within that time of the TCP connection;
the client logs why once (`MQTT cdu-1: 10.0.0.5:502 is not an MQTT broker: ...`) and keeps
retrying with backoff. `wait_connected()`'s TimeoutError carries the same reason.

`max_packet_bytes` (MQTT 5): the Maximum Packet Size declared in CONNECT. A compliant broker
then never sends this client a larger packet (it drops the message for this subscriber), so a
50 MB payload published on a command topic is never read; a peer that sends one anyway is
disconnected when its length is read, before its payload is (MQTT 5 3.1.2.24).

Every connection runs with TCP_NODELAY: with Nagle on, a QoS 1 publish written right after a
PUBACK waits for the peer's delayed ACK, 40 ms a hop on Linux. paho's packet log goes to the
logger `edge_runtime.federation.paho` (WARNING by default; set it to DEBUG to see packets):
paho then formats a line only when it is logged, where an on_log callback formatted one for
every packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_runtime.federation.config import MqttConfig
from edge_runtime.security.tls import client_context

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    """A received message."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    response_topic: str | None = None  # MQTT 5 request/response
    correlation_data: bytes | None = None
    properties: Properties | None = None


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes when the connection dies without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def _no_op(*_args: Any) -> None:
    return None


PAHO_LOG = logging.getLogger("edge_runtime.federation.paho")
if PAHO_LOG.level == logging.NOTSET:
    PAHO_LOG.setLevel(logging.WARNING)


class _NotConnected(logging.Filter):
    """paho logs an ERROR for every call while offline (a refused publish, the last loop at
    shutdown); the client reports being offline itself, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


class _ErrorsTo(logging.Handler):
    """paho's ERROR lines for one client into its `errors` (connection diagnostics)."""

    def __init__(self, note: Callable[[str], None]) -> None:
        super().__init__(logging.ERROR)
        self._note = note

    def emit(self, record: logging.LogRecord) -> None:
        self._note(record.getMessage())


_CONNACK = 0x20
_FIXED_HEADER_MAX = 5  # packet type byte and up to four remaining-length bytes


class _Paho(paho.Client):
    """paho's client with two checks where bytes arrive (paho 2.x hooks; tests/
    test_mqtt_connect.py pins both): the peer's first packet must be a CONNACK, and no packet
    may be longer than the maximum packet size declared (0: none)."""

    connack_seen = False
    max_packet = 0
    refused: str | None = None  # why this client dropped the connection, for the log

    def _sock_recv(self, bufsize: int) -> bytes:
        # paho reads a packet's type byte, then its length, then its body: each check runs
        # at the read after what it checks arrived, before anything else is read.
        packet = self._in_packet
        command = packet["command"]
        if command and not self.connack_seen and command & 0xF0 != _CONNACK:
            self.refused = f"its first packet is not a CONNACK (first byte 0x{command:02x})"
            raise OSError(self.refused)
        if self.max_packet and packet["have_remaining"]:
            size = 1 + len(packet["remaining_count"]) + packet["remaining_length"]
            if size > self.max_packet:
                self.refused = (f"a packet of {size} bytes (type 0x{command >> 4:x}) exceeds "
                                f"the {self.max_packet}-byte maximum packet size; dropped the "
                                "connection before reading it")
                raise OSError(self.refused)
        return super()._sock_recv(bufsize)

    def _packet_handle(self) -> MQTTErrorCode:
        rc = super()._packet_handle()
        if self._in_packet["command"] & 0xF0 == _CONNACK:
            self.connack_seen = True
        return rc


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it untyped


def encode_vbi(n: int) -> bytes:
    """MQTT variable byte integer (remaining lengths, property lengths)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


class PackedPublishProperties(Properties):
    """PUBLISH properties holding only a response topic and/or correlation data, packed once
    at construction. paho only calls pack() on outgoing properties, and its own Properties
    costs ~40 us to build, set and pack (per request/response answer: measured with
    bench/announce_latency.py and a microbenchmark); this costs ~2 us. Same bytes on the wire.
    """

    def __init__(self, response_topic: str | None = None,
                 correlation_data: bytes | None = None) -> None:
        # no super().__init__(): that builds the name tables this class does not use
        self.packetType = PacketTypes.PUBLISH
        self.ResponseTopic = response_topic
        self.CorrelationData = correlation_data
        body = b""
        if response_topic is not None:
            topic = response_topic.encode("utf-8")
            if len(topic) > 0xFFFF:
                raise ValueError("response topic longer than 65535 bytes")
            body += b"\x08" + len(topic).to_bytes(2, "big") + topic
        if correlation_data is not None:
            data = bytes(correlation_data)
            if len(data) > 0xFFFF:
                raise ValueError("correlation data longer than 65535 bytes")
            body += b"\x09" + len(data).to_bytes(2, "big") + data
        self._packed = encode_vbi(len(body)) + body

    __setattr__ = object.__setattr__  # paho's checks the name tables; the bytes are fixed

    def pack(self) -> bytes:
        return self._packed

    def __str__(self) -> str:
        return (f"[ResponseTopic: {self.ResponseTopic!r}, "
                f"CorrelationData: {self.CorrelationData!r}]")


def node_packet_limit(max_message_bytes: int) -> int:
    """The MQTT 5 Maximum Packet Size a node declares: twice its `[mqtt] max_message_bytes`, so
    a command a little over the limit still arrives and is answered `oversized` on the error
    topic, plus room for topic and properties; the broker drops anything larger unread."""
    return 2 * max_message_bytes + 4096


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    """A TLS 1.3-only client context with the node's certificate; None without [mqtt.tls].
    The site's one client TLS policy (security/tls.py): TLS 1.2 brokers are refused."""
    if cfg.tls is None:
        return None
    return client_context(cfg.tls.ca, cfg.tls.cert, cfg.tls.key)


class MqttClient:
    """One MQTT connection, kept up by a background thread; see the module docstring."""

    def __init__(
        self,
        cfg: MqttConfig,
        *,
        client_id: str | None = None,
        on_message: Callable[[Message], None] | None = None,
        on_connect: Callable[[MqttClient], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
        on_published: Callable[[int], None] | None = None,
        max_inflight: int = 100,
        session_expiry_s: int = 0,
        clean_start: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        track_acks: bool = True,
        connect_timeout_s: float = 5.0,
        max_packet_bytes: int = 0,
    ) -> None:
        """`on_connect` runs on the network thread; the other callbacks run in the loop.
        `ssl_context` replaces the one built from `cfg.tls` (tests of refused clients).
        `clean_start=False` with `session_expiry_s` > 0 (MQTT 5; 3.1.1: clean session off)
        keeps the broker-side session, so QoS 1 messages published while this subscriber is
        away are queued for it (with broker persistence, even across a broker restart).
        `track_acks=False` (no on_published either): PUBACKs stay on the network thread.
        `connect_timeout_s`: for the TCP connection, the TLS handshake and then the CONNACK.
        `max_packet_bytes` (MQTT 5, 0 for none): the Maximum Packet Size this client accepts."""
        self.cfg = cfg
        self.client_id = client_id if client_id is not None else cfg.client_id
        self._on_message = on_message
        self._on_connect = on_connect
        self._on_state = on_state
        self._on_published = on_published
        self._session_expiry_s = session_expiry_s
        protocol = paho.MQTTv5 if cfg.mqtt5 else paho.MQTTv311
        self._clean_start = clean_start
        kwargs: dict[str, Any] = {} if cfg.mqtt5 else {"clean_session": clean_start}
        self._paho = _Paho(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                           protocol=protocol, **kwargs)
        self.connect_timeout_s = connect_timeout_s
        self._paho.connect_timeout = connect_timeout_s
        self.max_packet_bytes = max_packet_bytes if cfg.mqtt5 else 0
        self._paho.max_packet = self.max_packet_bytes
        self._paho.max_inflight_messages_set(max_inflight)
        self._paho.max_queued_messages_set(0)
        self._paho.on_connect = self._cb_connect
        self._paho.on_disconnect = self._cb_disconnect
        self._paho.on_message = self._cb_message
        self._track_acks = track_acks or on_published is not None
        if self._track_acks:
            self._paho.on_publish = self._cb_publish
        self._paho.on_subscribe = self._cb_subscribe
        # a logger of its own, outside logging's registry (client ids repeat: a registered
        # one would collect a handler per client ever made), under PAHO_LOG for levels and
        # output
        self._paho_log = logging.Logger(f"{PAHO_LOG.name}.{self.client_id or 'client'}")
        self._paho_log.parent = PAHO_LOG
        self._paho_log.addFilter(_NotConnected())
        # paho's "failed to receive" line for a refusal of ours: _why_dropped says it better
        self._paho_log.addFilter(lambda r: not (self._paho.refused
                                                and self._paho.refused in r.getMessage()))
        self._paho_log.addHandler(_ErrorsTo(self._record_error))
        self._paho.enable_logger(self._paho_log)
        # With this hook set, publish() from the loop thread only queues and wakes the network
        # thread; without it paho writes to the socket from the caller's thread, and an SSL
        # socket written and read from two threads at once fails ("bad length").
        self._paho.on_socket_register_write = _no_op
        ctx = ssl_context or tls_context(cfg)
        if ctx is not None:
            self._paho.tls_set_context(ctx)
        self._subscriptions: dict[str, tuple[int, bool, bool]] = {}
        self.max_backlog = 1000  # received messages waiting for the loop
        self._backlog = 0
        self._backlog_lock = threading.Lock()
        self._drained = threading.Event()
        self._drained.set()
        self._sub_pending: set[int] = set()
        self._subscribed = asyncio.Event()
        self._lock = threading.Lock()
        self._connected = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._up = asyncio.Event()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self.errors: deque[str] = deque(maxlen=20)
        self._last_noted = ""
        self.connects = 0
        self.disconnects = 0
        self.published = 0
        self.received = 0

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the loss of the connection."""
        return self._connected

    def set_will(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = True) -> None:
        """Set the will registered with the broker at the next CONNECT (not the current one)."""
        self._paho.will_set(topic, payload, qos=qos, retain=retain)

    def subscribe(self, topic: str, qos: int = 1, *, retain_as_published: bool = False,
                  no_local: bool = False) -> None:
        """Subscribe now if connected, and again after every reconnect. MQTT 5 options:
        `retain_as_published` keeps the retain flag on live messages, so a receiver can tell
        them apart; `no_local`: the broker does not send this client's own publishes back."""
        with self._lock:
            self._subscriptions[topic] = (qos, retain_as_published, no_local)
            if self._connected:
                self._track_sub(self._send_subscribe(topic, qos, retain_as_published, no_local))

    def _send_subscribe(self, topic: str, qos: int, rap: bool, no_local: bool) -> int | None:
        if self.cfg.mqtt5:
            opts = SubscribeOptions(qos=qos, retainAsPublished=rap, noLocal=no_local)
            return self._paho.subscribe(topic, options=opts)[1]
        return self._paho.subscribe(topic, qos)[1]

    def on_network_thread(self, topic_filter: str, handler: Callable[[Message], None]) -> None:
        """Hand messages matching `topic_filter` (a plain filter, also for what arrives on a
        `$share/...` subscription) to `handler` on the network thread, not the loop. The
        handler must be quick, thread-safe and must not raise (exceptions are logged)."""
        def deliver(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
            props = getattr(msg, "properties", None)
            try:
                handler(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain),
                                getattr(props, "ResponseTopic", None),
                                getattr(props, "CorrelationData", None)))
            except Exception:  # never into paho's loop
                log.exception("MQTT %s: handler for %s failed", self.client_id, msg.topic)

        self._paho.message_callback_add(topic_filter, deliver)

    def _track_sub(self, mid: int | None) -> None:
        if mid is not None:
            self._sub_pending.add(mid)
            self._call(self._subscribed.clear)

    async def wait_subscribed(self, timeout: float | None = 5.0) -> None:
        """Return once connected and every subscription is acknowledged (SUBACK)."""
        async def _wait() -> None:
            while True:
                await self._up.wait()
                await self._subscribed.wait()
                with self._lock:
                    if self._connected and not self._sub_pending:
                        return
                await asyncio.sleep(0.01)
        await asyncio.wait_for(_wait(), timeout)

    def start(self) -> None:
        """Begin connecting in the background (call from inside the running loop)."""
        if self._thread is not None:
            raise RuntimeError("client already started")
        self._loop = asyncio.get_running_loop()
        if self.cfg.mqtt5:
            props = _properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self._session_expiry_s
            if self.max_packet_bytes:
                props.MaximumPacketSize = self.max_packet_bytes
            self._paho.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s,
                                     clean_start=self._clean_start, properties=props)
        else:
            self._paho.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s)
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}",
                                        daemon=True)
        self._thread.start()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once connected; TimeoutError (with the last error) after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            seen = list(dict.fromkeys(reversed(self.errors)))[:3]
            why = "; ".join(seen) if seen else "no error reported"
            raise TimeoutError(f"MQTT {self.cfg.host}:{self.cfg.port} not connected after "
                               f"{timeout} s: {why}") from None

    async def stop(self, *, timeout: float = 5.0) -> None:
        """Disconnect cleanly (no will is sent) and end the network thread."""
        self._stop.set()
        self._drained.set()
        if self._connected:
            self._paho.disconnect()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout)
        self._paho.disconnect()  # closes the socket if the thread gave up first
        self._set_connected(False)

    def abort(self) -> None:
        """Drop the TCP connection without a DISCONNECT, as a crash would (tests, rebirth)."""
        sock = self._paho.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                cast(socket.socket, sock).shutdown(socket.SHUT_RDWR)

    # -- publishing -----------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False, *,
                response_topic: str | None = None, correlation_data: bytes | None = None,
                properties: Properties | None = None) -> int | None:
        """Queue a message; its mid, or None when offline (nothing is kept for later)."""
        if not self._connected:
            return None
        if self.cfg.mqtt5 and (response_topic is not None or correlation_data is not None):
            if properties is None:
                properties = PackedPublishProperties(response_topic, correlation_data)
            else:
                if response_topic is not None:
                    properties.ResponseTopic = response_topic
                if correlation_data is not None:
                    properties.CorrelationData = correlation_data
        info = self._paho.publish(topic, payload, qos, retain,
                                  properties if self.cfg.mqtt5 else None)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        self.published += 1
        return info.mid

    async def publish_acked(self, topic: str, payload: bytes | str, qos: int = 1,
                            retain: bool = False, *, timeout: float = 5.0,
                            **kwargs: Any) -> None:
        """Publish and wait until the broker acknowledged it (QoS 1) or it was written (QoS 0);
        ConnectionError if offline or the connection drops first, TimeoutError after `timeout`."""
        assert self._loop is not None, "start() first"
        if not self._track_acks:
            raise RuntimeError("publish_acked() needs track_acks=True")
        fut: asyncio.Future[None] = self._loop.create_future()
        mid = self.publish(topic, payload, qos, retain, **kwargs)
        if mid is None:
            raise ConnectionError(f"MQTT offline: cannot publish to {topic}")
        # No await since publish(): the ack callback cannot have run yet.
        self._acks[mid] = fut
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            self._acks.pop(mid, None)

    # -- paho callbacks (network thread) --------------------------------------------------------
    def _run(self) -> None:
        delay = self.cfg.reconnect_min_s
        while not self._stop.is_set():
            self._paho.connack_seen, self._paho.refused = False, None
            try:
                self._paho.reconnect()  # blocking TCP connect and TLS handshake: this thread only
            except (OSError, ValueError) as exc:
                self._note_error(f"connect to {self.cfg.host}:{self.cfg.port} failed: {exc}")
                self._stop.wait(delay)
                delay = min(delay * 2, self.cfg.reconnect_max_s)
                continue
            connack_by = time.monotonic() + self.connect_timeout_s
            rc = MQTTErrorCode.MQTT_ERR_SUCCESS
            while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and not self._stop.is_set():
                rc = self._paho.loop(timeout=0.2)
                if not self._paho.connack_seen and time.monotonic() > connack_by \
                        and self._paho.refused is None:
                    self._paho.refused = (f"no CONNACK within {self.connect_timeout_s:g} s of "
                                          "the TCP connection")
                    self.abort()  # the next loop() sees the socket closed
            if not self._stop.is_set() and not self._paho.connack_seen:
                self._note_error(self._why_dropped(rc))  # after: _cb_disconnect says why
            if self._stop.is_set():
                # flush the DISCONNECT queued by stop(); the broker drops the will on it
                for _ in range(10):
                    if self._paho.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                break
            if self._connected:
                delay = self.cfg.reconnect_min_s  # it was a working connection: retry soon
            self._set_connected(False)
            self._stop.wait(delay)
            delay = min(delay * 2, self.cfg.reconnect_max_s)
        self._set_connected(False)

    def _why_dropped(self, rc: MQTTErrorCode) -> str:
        where = f"{self.cfg.host}:{self.cfg.port}"
        if self._paho.connack_seen:  # an MQTT broker that broke the size limit declared
            return f"{where}: {self._paho.refused}"
        why = self._paho.refused or (f"it closed the connection before a CONNACK "
                                     f"({paho.error_string(rc)})")
        return f"{where} is not an MQTT {self.cfg.protocol} broker: {why}"

    def _cb_connect(self, client: paho.Client, userdata: Any, flags: Any,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            self._note_error(f"broker refused the connection: {reason}")
            return
        client.drop_out_messages()  # the application republishes what it still needs
        sock = client.socket()
        if isinstance(sock, socket.socket):  # see the module docstring
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sub_pending.clear()
            for topic, (qos, rap, no_local) in self._subscriptions.items():
                self._track_sub(self._send_subscribe(topic, qos, rap, no_local))
            if not self._sub_pending:
                self._call(self._subscribed.set)
        self.connects += 1
        self._last_noted = ""  # the next trouble is news again
        self._connected = True
        if self._on_connect is not None:
            try:
                self._on_connect(self)
            except Exception:
                log.exception("MQTT on_connect hook failed")
        self._call(self._state_changed, True)

    def _cb_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                       reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure and self._connected:
            self._note_error(self._why_dropped(MQTTErrorCode.MQTT_ERR_CONN_LOST)
                             if self._paho.refused else f"disconnected: {reason}")
        self._set_connected(False)

    def _set_connected(self, up: bool) -> None:
        if self._connected and not up:
            self.disconnects += 1
            self._connected = False
            self._call(self._state_changed, False)

    def _cb_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        rt = getattr(props, "ResponseTopic", None) if props is not None else None
        cd = getattr(props, "CorrelationData", None) if props is not None else None
        with self._backlog_lock:
            self._backlog += 1
            full = self._backlog >= self.max_backlog
            if full:
                self._drained.clear()
        self._call(self._deliver, Message(msg.topic, bytes(msg.payload), msg.qos,
                                          bool(msg.retain), rt, cd, props))
        if full:
            # Backpressure: stop reading the socket until the loop has caught up, so a slow
            # consumer makes the broker queue (and apply its limits) instead of this process
            # buffering without bound. Bounded so keepalive pings still go out.
            while not self._drained.wait(1.0) and not self._stop.is_set():
                self._paho.loop_misc()

    def _cb_publish(self, client: paho.Client, userdata: Any, mid: int,
                    reason: ReasonCode, properties: Properties | None) -> None:
        self._call(self._published, mid)

    def _cb_subscribe(self, client: paho.Client, userdata: Any, mid: int,
                      reasons: list[ReasonCode], properties: Properties | None) -> None:
        for r in reasons:
            if r.is_failure:
                self._note_error(f"subscription refused: {r}")
        with self._lock:
            self._sub_pending.discard(mid)
            if not self._sub_pending:
                self._call(self._subscribed.set)

    def _note_error(self, text: str) -> None:
        if text != self._last_noted:  # a broker down for an hour: one line, not one a retry
            log.warning("MQTT %s: %s", self.client_id, text)
            self._last_noted = text
        self.errors.append(text)

    def _record_error(self, text: str) -> None:
        """paho's own error line (already logged through PAHO_LOG): kept for diagnostics."""
        self.errors.append(text)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the program is ending
            self._loop.call_soon_threadsafe(fn, *args)

    # -- loop side --------------------------------------------------------------------------------
    def _state_changed(self, up: bool) -> None:
        if up != self._connected:
            return  # stale: the state flipped again before this ran
        if up:
            self._up.set()
        else:
            self._up.clear()
            for fut in self._acks.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("MQTT connection lost before the ack"))
        if self._on_state is not None:
            self._on_state(up)

    def _deliver(self, msg: Message) -> None:
        self.received += 1
        with self._backlog_lock:
            self._backlog -= 1
            if self._backlog <= self.max_backlog // 2:
                self._drained.set()
        if self._on_message is not None:
            try:
                self._on_message(msg)
            except Exception:
                log.exception("MQTT message handler failed on %s", msg.topic)

    def _published(self, mid: int) -> None:
        fut = self._acks.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(None)
        if self._on_published is not None:
            self._on_published(mid)

    def get_status(self) -> dict[str, Any]:
        """Connection state and counters."""
        return {"broker": f"{self.cfg.host}:{self.cfg.port}", "protocol": self.cfg.protocol,
                "tls": self.cfg.tls is not None, "connected": self._connected,
                "connects": self.connects, "disconnects": self.disconnects,
                "published": self.published, "received": self.received,
                "last_error": self.errors[-1] if self.errors else None}
