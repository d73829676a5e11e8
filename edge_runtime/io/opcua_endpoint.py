"""One OPC UA session per server, shared by the devices behind it (the Modbus endpoint's twin).

OpcUaEndpoint connects with our own backoff (asyncua's auto-reconnect is off, so exactly one
policy decides), bounds every request with the device's timeout and turns failures into
FieldErrors as the Modbus endpoint does. A dropped socket or a failed keep-alive probe
(asyncua's supervisor, every second) ends the session; the next poll reconnects. `resolve`
turns a device's refs into NodeIds on the connected server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from edge_runtime.config.schema import DeviceConfig
from edge_runtime.io.modbus import DISCONNECTED, FieldError
from edge_runtime.io.opcua_codec import Ref, browse_path, resolve_uri, status_text
from edge_runtime.io.opcua_security import apply_security

log = logging.getLogger(__name__)

T = TypeVar("T")
_TIMEOUTS_BEFORE_RECONNECT = 3  # a silent server may be a half-open connection: start over
_CONNECT_REQUESTS = 4  # hello, OpenSecureChannel, CreateSession, ActivateSession
# A session the server keeps after we vanished (a killed node) ends within a minute.
SESSION_TIMEOUT_MS = 60_000


class OpcUaEndpoint:
    """One session with an OPC UA server (url + security), shared by the devices behind it."""

    def __init__(self, device: DeviceConfig, *, backoff_min_s: float = 0.1,
                 backoff_max_s: float = 5.0) -> None:
        self.url, self.security, self.timeout_s = device.url, device.security, device.timeout_s
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self.client: Client | None = None
        self.namespaces: list[str] = []
        self._lock = asyncio.Lock()  # held for a connect: never two sessions at once
        self._backoff = backoff_min_s
        self._next_attempt = 0.0
        self._timeouts_in_row = 0
        self._closing: set[asyncio.Task[None]] = set()
        self.generation = 0  # +1 per successful connect: drivers re-bind and rewrite outputs
        self.ever_connected = False
        self.connects = self.connect_failures = self.requests = 0
        self.last_error = ""

    @property
    def name(self) -> str:
        """The server URL."""
        return self.url

    @property
    def connected(self) -> bool:
        """True while the session is up."""
        return self.client is not None and self.client.uaclient.state is UaClientState.CONNECTED

    async def ensure_connected(self) -> bool:
        """True when connected; otherwise one connect attempt if the backoff allows it."""
        if self.connected:
            return True
        if time.monotonic() < self._next_attempt:
            return False
        async with self._lock:
            if self.connected:
                return True
            if time.monotonic() < self._next_attempt:
                return False
            return await self._connect()

    async def _connect(self) -> bool:
        self._drop()
        # The supervisor's keep-alive probe finds a dead but open connection within ~2 s.
        client = Client(self.url, timeout=self.timeout_s, watchdog_intervall=1.0)
        client.session_timeout = SESSION_TIMEOUT_MS
        error = "cancelled"
        try:
            async with asyncio.timeout(self.timeout_s * _CONNECT_REQUESTS):
                if self.security is not None:
                    await apply_security(client, self.security)
                await client.connect(auto_reconnect=False)
                namespaces = await client.get_namespace_array()
            error = ""
        except TimeoutError:
            error = f"connect timeout after {self.timeout_s * _CONNECT_REQUESTS * 1000:.0f} ms"
        except Exception as exc:  # OSError, ua errors, certificate errors: all mean "not now"
            error = f"connect failed: {exc!r}"
        finally:
            if error:  # failed or cancelled half-way: nothing of this client may linger
                self._close_later(client)
        if error:
            self.connect_failures += 1
            if self.connect_failures == 1 or self._backoff >= self.backoff_max_s:
                log.warning("%s: %s; retrying in %.1f s", self.name, error, self._backoff)
            self.last_error = error
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.backoff_max_s)
            return False
        self.client, self.namespaces = client, list(namespaces)
        self._backoff, self._next_attempt, self._timeouts_in_row = self.backoff_min_s, 0.0, 0
        self.generation += 1
        self.connects += 1
        self.ever_connected = True
        log.info("%s: connected", self.name)
        return True

    def _close_later(self, client: Client) -> None:
        """Disconnect in the background: a dead server must not hold up the caller."""
        async def close() -> None:
            try:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.timeout_s):
                        await client.disconnect()
            finally:  # even when the loop ends and cancels us: no socket left behind
                client.disconnect_socket()
        task = asyncio.ensure_future(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _drop(self, reason: str = "") -> None:
        if self.client is not None:
            self._close_later(self.client)
            self.client = None
            if reason:
                self.last_error = reason
                log.warning("%s: session dropped: %s", self.name, reason)

    async def request(self, call: Callable[[Client], Awaitable[T]]) -> T:
        """One service call on the session, bounded by the timeout; raises FieldError."""
        client = self.client
        if client is None or not self.connected:
            self._drop("connection lost")
            raise FieldError(DISCONNECTED, "disconnected")
        self.requests += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await call(client)
        except TimeoutError:
            self._timeouts_in_row += 1
            if self._timeouts_in_row >= _TIMEOUTS_BEFORE_RECONNECT:
                self._drop(f"{self._timeouts_in_row} timeouts in a row")
            raise FieldError("timeout", f"timeout after {self.timeout_s * 1000:.0f} ms") from None
        except UaStatusCodeError as exc:  # the service itself answered Bad
            self._timeouts_in_row = 0
            code = ua.StatusCode(exc.code)
            if code.value in _SESSION_GONE:
                self._drop(f"session ended: {status_text(code)}")
                raise FieldError(DISCONNECTED, "disconnected") from None
            raise FieldError("service", status_text(code), code.value) from None
        except (ConnectionError, OSError) as exc:
            self._drop(f"connection lost: {exc!r}")
            raise FieldError(DISCONNECTED, "disconnected") from None
        self._timeouts_in_row = 0
        return result

    def close(self) -> None:
        """Close the session (the next ensure_connected reconnects)."""
        self._drop()

    def get_status(self) -> dict[str, Any]:
        """Connection state and counters."""
        return {"endpoint": self.name, "connected": self.connected, "connects": self.connects,
                "connect_failures": self.connect_failures, "requests": self.requests,
                "security": self.security.policy_mode if self.security else "none",
                "last_error": self.last_error}


_SESSION_GONE = {StatusCodes.BadSessionIdInvalid, StatusCodes.BadSessionClosed,
                 StatusCodes.BadSecureChannelIdInvalid, StatusCodes.BadConnectionClosed,
                 StatusCodes.BadServerHalted, StatusCodes.BadShutdown}


async def resolve(ep: OpcUaEndpoint, refs: Mapping[str, Ref]) -> tuple[dict[str, ua.NodeId],
                                                                        dict[str, str]]:
    """Point name -> NodeId on the connected server, and point name -> why it has none."""
    nodeids: dict[str, ua.NodeId] = {}
    problems: dict[str, str] = {}
    paths: list[tuple[str, Ref]] = []
    for name, ref in refs.items():
        if ref.nodeid is not None:
            nodeids[name] = ref.nodeid
        elif ref.uri:
            found = resolve_uri(ref, ep.namespaces)
            if found is None:
                problems[name] = f"{ref.text}: namespace {ref.uri!r} is not on the server"
            else:
                nodeids[name] = found
        else:
            paths.append((name, ref))
    if paths:
        results = await ep.request(lambda c: c.uaclient.translate_browsepaths_to_nodeids(
            [browse_path(r) for _, r in paths]))
        for (name, ref), res in zip(paths, results, strict=True):
            if res.StatusCode.is_good() and res.Targets:
                tid = res.Targets[0].TargetId  # an ExpandedNodeId: keep the plain NodeId
                nodeids[name] = ua.NodeId(tid.Identifier, tid.NamespaceIndex, tid.NodeIdType)
            else:
                problems[name] = f"{ref.text}: browse path {status_text(res.StatusCode)}"
    return nodeids, problems
