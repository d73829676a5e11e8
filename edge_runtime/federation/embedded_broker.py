"""An MQTT broker inside our own event loop (amqtt 0.12), for `pswd-edge demo` without Mosquitto.

    async with EmbeddedBroker(port=0) as broker:      # 0: a free port, chosen by the kernel
        cfg = MqttConfig(host=broker.host, port=broker.port, protocol="3.1.1")

The demo prefers a real Mosquitto when one is installed (find_mosquitto()) and falls back to
this. It listens on 127.0.0.1 only, anonymous, plain TCP, everything in memory: retained
messages and sessions vanish when it stops. amqtt's loggers (and `transitions`, its state
machine) are set to WARNING, so its per-connection INFO lines stay out of the demo.

Limits of amqtt (STACK-NOTES.md), and what they cost us:
- MQTT 3.1.1 only: clients must connect with protocol MQTTv311. No MQTT 5 user properties
  (the `historical=true` marker travels only inside the CBOR batch, key 5), no response topic
  or correlation data (the workload client waits on `workload/response/{workload_id}`), no
  reason codes, no message or session expiry.
- No shared subscriptions: `$share/group/topic` is not split among subscribers, so the demo
  runs one site coordinator; scale-out needs a real broker.
- PUBACK goes out before the message is routed and retained: a client that subscribes right
  after a PUBACK may still miss that retained message (wait for a delivery, not the PUBACK).
- Pure Python in the node's own process: 1.5-3x slower than Mosquitto, and its work shares
  the loop (and the GIL) with the scan. Fine for a demo, never for a plant.

Production uses Mosquitto 2.x (TLS 1.3, client certificates, MQTT 5; tests/mosquitto.py shows
the configuration) or, for a site coordinator that scales past one machine, a clustered MQTT 5
broker with shared subscriptions: EMQX, HiveMQ or VerneMQ. Nodes only need host, port and TLS
files in `[mqtt]`; nothing in the runtime depends on which broker answers.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

from amqtt.broker import Broker  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

QUIET_LOGGERS = ("amqtt", "transitions")
MOSQUITTO_PLACES = (Path("/usr/sbin/mosquitto"), Path("/usr/local/sbin/mosquitto"),
                    Path("/opt/homebrew/sbin/mosquitto"))
_ANONYMOUS = "amqtt.plugins.authentication.AnonymousAuthPlugin"


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not start (port taken, bad address)."""


def find_mosquitto() -> str | None:
    """Path of an installed mosquitto executable, or None. Looks on PATH, then in sbin dirs."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for place in MOSQUITTO_PLACES:
        if place.is_file() and shutil.which(str(place)):  # which() checks it is executable
            return str(place)
    return None


def quiet_amqtt(level: int = logging.WARNING) -> None:
    """Raise amqtt's loggers to `level` (it logs every connection at INFO)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)


class EmbeddedBroker:
    """amqtt broker on host:port inside the running loop; an async context manager."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {port}")
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._broker: Any = None

    @property
    def port(self) -> int:
        """The port it listens on (the kernel's choice when constructed with port=0)."""
        if self._port is None:
            raise RuntimeError("embedded broker is not running")
        return self._port

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._broker is not None

    @property
    def url(self) -> str:
        """mqtt://host:port, for logs and the demo summary."""
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving; raises EmbeddedBrokerError naming the address on failure."""
        if self._broker is not None:
            raise RuntimeError("embedded broker is already running")
        quiet_amqtt()
        where = f"{self.host}:{self._requested_port}"
        config = {
            "listeners": {"default": {"type": "tcp", "bind": where}},
            # Only anonymous auth: amqtt's default plugin set would also start a $SYS
            # publisher task and packet/event loggers the demo does not want.
            "plugins": {_ANONYMOUS: {"allow_anonymous": True}},
        }
        broker = Broker(config)
        try:
            await broker.start()
        except Exception as exc:  # amqtt wraps OSError (port in use) in BrokerError
            await _quiet_shutdown(broker)
            raise EmbeddedBrokerError(f"embedded MQTT broker cannot listen on {where}: "
                                      f"{exc}") from exc
        self._broker = broker
        self._port = _bound_port(broker) or self._requested_port
        log.info("embedded MQTT 3.1.1 broker on %s", self.url)

    async def stop(self) -> None:
        """Disconnect every client, close the listener and end amqtt's tasks; idempotent."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        await broker.shutdown()
        self._port = None

    def get_status(self) -> dict[str, Any]:
        """Address, whether it runs and how many clients are connected."""
        sessions = len(self._broker.sessions) if self._broker is not None else 0
        return {"kind": "amqtt", "protocol": "3.1.1", "host": self.host,
                "port": self._port, "running": self.running, "sessions": sessions}

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()


def _bound_port(broker: Any) -> int | None:
    """The port the default listener really bound (amqtt keeps its asyncio.Server privately)."""
    server = getattr(broker, "_servers", {}).get("default")
    sockets = getattr(getattr(server, "instance", None), "sockets", None) or ()
    for sock in sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return int(sock.getsockname()[1])
    return None


async def _quiet_shutdown(broker: Any) -> None:
    """Best-effort cleanup after a failed start (amqtt refuses shutdown() unless started)."""
    for server in getattr(broker, "_servers", {}).values():
        try:
            await server.close_instance()
        except Exception:  # cleanup of a start that already failed
            log.debug("embedded broker: listener cleanup failed", exc_info=True)
    tasks = [t for t in (getattr(broker, "_broadcast_task", None),
                         getattr(broker, "_session_monitor_task", None)) if t is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
