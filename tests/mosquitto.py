"""A real Mosquitto for tests and benchmarks: started on a free loopback port from a config
generated in a temp directory, plain or TLS 1.3 with client certificates; kill and restart.

In a test module:

    from tests.mosquitto import Broker, mosquitto_fixture, mosquitto_tls_fixture  # noqa: F401

    @pytest.mark.anyio
    async def test_x(mosquitto: Broker) -> None:
        cfg = mosquitto.mqtt_config(protocol="5")      # an MqttConfig pointing at this broker
        ...
        mosquitto.kill()                                # SIGKILL, as a crash
        mosquitto.start()                               # same port, same config

`mosquitto_tls` listens with TLS 1.3 only and `require_certificate true`; `broker.pki` holds
the CA, server and client certificate paths (edge_runtime.security.pki). Importing the
`*_fixture` functions registers the fixtures `mosquitto` and `mosquitto_tls` in that
module. Outside pytest (the benchmarks), use `with Broker(directory) as broker:`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.federation.config import MqttConfig, TlsConfig
from edge_runtime.federation.mqtt import Message
from edge_runtime.security.pki import PkiFiles, write_pki

MOSQUITTO = Path("/usr/sbin/mosquitto")
INSTALL_HINT = "install it: apt-get install -y mosquitto"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Broker:
    """One Mosquitto process on 127.0.0.1:port, with its config and log in `directory`."""

    host = "127.0.0.1"

    def __init__(self, directory: Path, *, tls: bool = False, port: int | None = None,
                 persistence: bool = False, extra_config: str = "") -> None:
        if not MOSQUITTO.exists():
            raise FileNotFoundError(f"{MOSQUITTO} is missing; {INSTALL_HINT}")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.pki: PkiFiles | None = write_pki(directory / "pki") if tls else None
        self.config_path = directory / "mosquitto.conf"
        self.log_path = directory / "mosquitto.log"
        self.config_path.write_text(self._config(persistence, extra_config))
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self, persistence: bool, extra: str) -> str:
        lines = [
            "per_listener_settings false",
            "allow_anonymous true",
            f"listener {self.port} {self.host}",
            f"log_dest file {self.log_path}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            "max_queued_messages 100000",
        ]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")  # else it drops to 'mosquitto' and
            # cannot read the temp directory
        if persistence:
            # saved after every change, so sessions and subscriptions survive a SIGKILL
            lines += ["persistence true", f"persistence_location {self.directory}/",
                      "autosave_on_changes true", "autosave_interval 1"]
        if self.pki is not None:
            lines += [f"cafile {self.pki.ca}", f"certfile {self.pki.server_cert}",
                      f"keyfile {self.pki.server_key}", "tls_version tlsv1.3",
                      "require_certificate true", "use_identity_as_username true"]
        return "\n".join(lines) + "\n" + extra

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (or restart after kill/stop) and return once the port accepts connections."""
        if self.running:
            raise RuntimeError("broker already running")
        self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.config_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err.strip()}"
                                   f"\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise TimeoutError(f"mosquitto did not listen on {self.port} "
                                       f"within {timeout_s} s\n{self.log_tail()}") from None
                time.sleep(0.01)  # polling the port: mosquitto signals readiness no other way

    def kill(self) -> None:
        """SIGKILL: the broker vanishes as in a crash (no wills sent, nothing saved)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def restart(self) -> None:
        """Kill and start again on the same port."""
        self.kill()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the broker log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no broker log)"

    def mqtt_config(self, **overrides: Any) -> MqttConfig:
        """An MqttConfig for this broker (with the client certificate when TLS is on)."""
        tls = None
        if self.pki is not None:
            tls = TlsConfig(self.pki.ca, self.pki.client_cert, self.pki.client_key)
        base = MqttConfig(host=self.host, port=self.port, tls=tls, reconnect_min_s=0.1,
                          reconnect_max_s=1.0, state_dir=self.directory / "state")
        return dataclasses.replace(base, **overrides)

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def _broker(tmp_path: Path, name: str, **kwargs: Any) -> Iterator[Broker]:
    if not MOSQUITTO.exists():
        pytest.fail(f"{MOSQUITTO} is missing; {INSTALL_HINT}", pytrace=False)
    broker = Broker(tmp_path / name, **kwargs)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture(name="mosquitto")
def mosquitto_fixture(tmp_path: Path) -> Iterator[Broker]:
    """A plain-TCP Mosquitto on a free loopback port, killed after the test."""
    yield from _broker(tmp_path, "mosquitto")


@pytest.fixture(name="mosquitto_tls")
def mosquitto_tls_fixture(tmp_path: Path) -> Iterator[Broker]:
    """A TLS 1.3-only Mosquitto requiring client certificates; `broker.pki` has the files."""
    yield from _broker(tmp_path, "mosquitto-tls", tls=True)


class Inbox:
    """Collects messages from an MqttClient (pass it as on_message); waits with a bound."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = asyncio.Event()

    def __call__(self, msg: Message) -> None:
        self.messages.append(msg)
        self._changed.set()

    def on(self, topic: str) -> list[Message]:
        """Messages received on one topic, in order."""
        return [m for m in self.messages if m.topic == topic]

    async def wait_until(self, predicate: Callable[[Inbox], bool], timeout: float = 5.0,
                         what: str = "condition") -> None:
        """Return once predicate(self) holds; TimeoutError naming `what` after `timeout` s."""
        async def _wait() -> None:
            while not predicate(self):
                self._changed.clear()
                # woken by a message, or after 20 ms for predicates on other state
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.02)
        try:
            await asyncio.wait_for(_wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"{what} not met within {timeout} s; got {len(self.messages)} "
                               f"messages on {sorted({m.topic for m in self.messages})}") from None

    async def wait_for(self, n: int, topic: str | None = None,
                       timeout: float = 5.0) -> list[Message]:
        """Wait for at least n messages (on `topic` if given); returns them."""
        def enough(box: Inbox) -> bool:
            return len(box.on(topic) if topic else box.messages) >= n
        await self.wait_until(enough, timeout, f"{n} messages on {topic or 'any topic'}")
        return self.on(topic) if topic else self.messages
